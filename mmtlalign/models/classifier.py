"""Image classifier that trains on mixed batches with the targets of a label rule."""
import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from .alignment import aligned_target
from .labels import build_label_rule
from .mixing import TLAlignMix


@MODELS.register_module()
class TLAlignClassifier(ImageClassifier):
    """:class:`ImageClassifier` whose ``loss()`` mixes the batch and labels it with a label rule.

    In ``loss()``: mix with :class:`TLAlignMix`; the label rule runs the backbone on the mixed
    images and gives the partner share ``s`` (B,) of the output token (see
    :mod:`mmtlalign.models.labels`); the soft target ``(1 - s) * y_a + s * y_b`` goes as
    ``gt_score`` to the unchanged mmpretrain head and loss (label smoothing stays the loss's
    job). ``predict()`` is the parent's.

    Besides the loss it logs ``token_fluctuation``: the mean ``|rule share - area share|``, how
    far the label of the output token is from the area-ratio label (0 for area labels).

    Args:
        mix (dict | TLAlignMix): the mixer.
        align (bool | str | dict | LabelRule): the label rule. ``True``: TL-Align
            (``TLAlignLabel``, needs an aligned backbone); ``False``: area labels of plain
            CutMix, the same-recipe baseline (``AreaLabel``); or a rule's type name or config,
            e.g. ``dict(type='TransMixLabel')`` (TransMix, ViTs with a class token).
        **kwargs: those of :class:`ImageClassifier`. Leave ``train_cfg`` (mmpretrain's batch
            augments) unset: mixing happens here.
    """

    def __init__(self, *args, mix=dict(type='TLAlignMix'), align=True, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.data_preprocessor, 'batch_augments', None) is not None:
            raise UserInputError(
                'TLAlignClassifier mixes batches itself, but the data preprocessor also has '
                'batch augments (model.train_cfg.augments, e.g. from an inherited DeiT config); '
                'set `model.train_cfg=None` (or data_preprocessor.batch_augments=None).')
        self.label_rule = build_label_rule(align)
        self.label_rule.check_backbone(self.backbone)
        self.mixer = mix if isinstance(mix, TLAlignMix) else MODELS.build(mix)
        self._check_num_classes()

    @property
    def num_classes(self):
        return self.head.num_classes

    @property
    def patch_size(self):
        """Patch size of the backbone's patch embedding, the grid of token labels."""
        size = getattr(self.backbone, 'patch_size', None)
        if size is None:
            size = tuple(self.backbone.patch_embed.projection.stride)
        return size

    def _check_num_classes(self):
        loss_classes = getattr(self.head.loss_module, 'num_classes', None)
        if loss_classes is not None and loss_classes != self.num_classes:
            raise UserInputError(f'head.num_classes={self.num_classes} but head.loss.num_classes='
                             f'{loss_classes}; set both to the number of classes of the dataset.')

    def loss(self, inputs, data_samples):
        """Loss on the mixed batch with the label rule's targets.

        Args:
            inputs (Tensor): (B, C, H, W) normalised images.
            data_samples (list[DataSample]): with ``gt_label``.

        Returns:
            dict[str, Tensor]: the head's losses and ``token_fluctuation``.
        """
        labels = torch.cat([sample.gt_label for sample in data_samples]).to(inputs.device)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise UserInputError(f'label {bad} is out of range for head.num_classes='
                             f'{self.num_classes}; set model.head.num_classes to the number of '
                             'classes of the dataset.')
        mixed = self.mixer(inputs, self.patch_size)
        feats, share = self.label_rule(self.backbone, mixed)
        if self.with_neck:
            feats = self.neck(feats)
        target = aligned_target(labels, mixed.partner, share, self.num_classes)
        for sample, score in zip(data_samples, target):
            sample.set_gt_score(score)
        losses = self.head.loss(feats, data_samples)
        losses['token_fluctuation'] = (share - mixed.area_share).abs().mean().detach()
        return losses
