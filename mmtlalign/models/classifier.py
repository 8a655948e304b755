"""Image classifier that trains on mixed batches with the targets of a label rule."""
import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from ..errors import UserInputError, UserTypeError
from .alignment import aligned_target
from .labels import build_label_rule
from .mixing import TLAlignMix
from .token_loss import build_token_head, build_token_loss_config, token_targets


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

    **Dense token labels** (``token_loss``, opt-in; see :mod:`mmtlalign.models.token_loss`):
    every output token (ViT: the N patch tokens of the head's block after the final norm;
    Swin: the last stage's tokens) is also classified and trained with soft cross-entropy
    (the head's loss module, so the recipe's label smoothing) against its own target
    ``(1 - s_i) * y_a + s_i * y_b``; ``weight`` times the mean over tokens is added to the
    loss and logged as ``loss_token``.

    Args:
        mix (dict | TLAlignMix): the mixer.
        align (bool | str | dict | LabelRule): the label rule. ``True``: TL-Align
            (``TLAlignLabel``, needs an aligned backbone); ``False``: area labels of plain
            CutMix, the same-recipe baseline (``AreaLabel``); or a rule's type name or config,
            e.g. ``dict(type='TransMixLabel')`` (TransMix, ViTs with a class token).
        token_loss (dict, optional): ``dict(weight=0.5, labels='traced', head='shared')``.
            ``labels``: ``'traced'`` (each token's TL-Align share, from the trace the
            backbone runs anyway; needs ``align=True``) or ``'origin'`` (each token's
            starting share, MixToken's label; any rule). ``head``: ``'shared'`` (the head
            classifies the tokens) or ``'separate'`` (a linear ``token_head``, as LV-ViT's
            auxiliary head). Needs a backbone with per-token output (``forward_tokens``:
            the aligned ViT and Swin). None (default): off, everything as without it.
        **kwargs: those of :class:`ImageClassifier`. Leave ``train_cfg`` (mmpretrain's batch
            augments) unset: mixing happens here.
    """

    def __init__(self, *args, mix=dict(type='TLAlignMix'), align=True, token_loss=None,
                 **kwargs):
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
        self.token_loss_cfg = build_token_loss_config(token_loss)
        if self.token_loss_cfg is not None:
            self._check_token_loss()
            if self.token_loss_cfg.head == 'separate':  # registered last: see build_token_head
                self.token_head = build_token_head(self.backbone.token_channels,
                                                   self.num_classes)

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

    def _check_token_loss(self):
        backbone = self.backbone
        if not callable(getattr(backbone, 'forward_tokens', None)):
            raise UserTypeError(
                f'token_loss needs a backbone with per-token output (forward_tokens); '
                f'{type(backbone).__name__} has none. Use AlignedVisionTransformer or '
                'AlignedSwinTransformer, or set token_loss=None.')
        backbone.check_token_output()
        if self.token_loss_cfg.labels == 'traced' and not self.label_rule.traces_tokens:
            raise UserInputError(
                f"token_loss labels='traced' takes each token's share from TL-Align's trace, "
                f'but the label rule is {self.label_rule!r}; set align=True, or '
                "token_loss.labels='origin'.")

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
        if self.token_loss_cfg is not None:
            return self._dense_loss(inputs, data_samples, labels, mixed)
        feats, share = self.label_rule(self.backbone, mixed)
        losses = self._class_token_loss(feats, share, data_samples, labels, mixed)
        losses['token_fluctuation'] = (share - mixed.area_share).abs().mean().detach()
        return losses

    def _class_token_loss(self, feats, share, data_samples, labels, mixed):
        """The head's loss against the aligned soft target of the (B,) output shares."""
        if self.with_neck:
            feats = self.neck(feats)
        target = aligned_target(labels, mixed.partner, share, self.num_classes)
        for sample, score in zip(data_samples, target):
            sample.set_gt_score(score)
        return self.head.loss(feats, data_samples)

    def _dense_loss(self, inputs, data_samples, labels, mixed):
        """:meth:`loss` with the token loss: the same class-token loss, plus ``loss_token``.

        The label rule runs the backbone once in its dense form: the (B, N, C) output tokens
        and, for TL-Align, their traced (B, N) shares come from the same pass as ``outs``.
        """
        feats, share, tokens, traced = self.label_rule(self.backbone, mixed, dense=True)
        losses = self._class_token_loss(feats, share, data_samples, labels, mixed)
        token_share = self._token_share(inputs, mixed, traced, tokens.shape[1])
        losses['loss_token'] = self.token_loss_cfg.weight * self._token_loss(
            tokens, token_targets(labels, mixed.partner, token_share, self.num_classes))
        losses['token_fluctuation'] = (share - mixed.area_share).abs().mean().detach()
        return losses

    def _token_share(self, inputs, mixed, traced, num_tokens):
        """(B, N) partner share of each output token under ``token_loss.labels``."""
        if self.token_loss_cfg.labels == 'origin':
            ph, pw = self.patch_size
            grid = (inputs.shape[-2] // ph, inputs.shape[-1] // pw)
            token_share = self.backbone.origin_token_share(mixed.token_share, grid)
        elif traced is not None:
            token_share = traced
        else:  # a uniform batch is not traced: every token keeps the area share, exactly
            token_share = mixed.area_share.float()[:, None].expand(-1, num_tokens)
        if token_share.shape[1] != num_tokens:
            raise RuntimeError(f'{token_share.shape[1]} token shares for {num_tokens} output '
                               'tokens: the backbone\'s token output and its shares disagree.')
        return token_share

    def _token_loss(self, tokens, targets):
        """Mean over the B x N tokens of the head's loss module on each token.

        Args:
            tokens (Tensor): (B, N, C) output tokens.
            targets (Tensor): (B, N, K) their soft targets.

        Returns:
            Tensor: scalar.
        """
        flat = tokens.reshape(-1, tokens.shape[-1])
        if self.token_loss_cfg.head == 'separate':
            logits = self.token_head(flat)
        else:
            logits = self.head((flat, ))  # the head's own forward, token by token
        return self.head.loss_module(logits, targets.reshape(len(flat), -1),
                                     avg_factor=len(flat))
