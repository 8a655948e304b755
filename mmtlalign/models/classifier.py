"""Image classifier that trains on mixed batches with the targets of a label rule."""
import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from ..errors import UserInputError, UserTypeError
from .alignment import aligned_target
from .labels import RuleLossInputs, build_label_rule
from .labels.content import stack_fg_masks
from .mixing import BatchMixer
from .smmix import received_attention
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

    **Label drift per block** (``log_drift``, on by default; label rules that trace every
    block, i.e. TL-Align): ``drift/block_01`` ... ``drift/block_L`` the mean
    ``|traced share - area share|`` of the output had the network stopped after each block,
    and ``drift/final`` that of the output (= ``token_fluctuation``), read from the pass
    that trains (:attr:`ShareTracingMixin.trace_sink`): no extra forward. Their names hold no
    ``'loss'``, so mmengine's ``parse_losses`` logs them (text log, ``scalars.json``,
    TensorBoard) without adding them to the loss. Batches the rule does not trace (Mixup, no
    mix) have uniform shares, which no block changes: they log 0.

    **Dense token labels** (``token_loss``, opt-in; see :mod:`mmtlalign.models.token_loss`):
    every output token (ViT: the N patch tokens of the head's block after the final norm;
    Swin: the last stage's tokens) is also classified and trained with soft cross-entropy
    (the head's loss module, so the recipe's label smoothing) against its own target
    ``(1 - s_i) * y_a + s_i * y_b``; ``weight`` times the mean over tokens is added to the
    loss. Whenever the loss has several parts (the token loss, a rule's own terms), the head's
    is returned as ``loss_cls`` beside ``loss_token`` (and the others): mmengine's
    ``parse_losses`` sums every key holding ``'loss'`` into the optimised total and logs it
    as ``loss`` (a part named ``loss`` would overwrite that total in the log).

    Args:
        mix (dict | BatchMixer): the mixer: :class:`TLAlignMix` (CutMix / Mixup), or
            :class:`MaskMix`, :class:`BlockMaskMix`, :class:`SMMix`, :class:`RandomChoiceMix`.
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
        log_drift (bool): log the label drift per block (above). Default True.
        **kwargs: those of :class:`ImageClassifier`. Leave ``train_cfg`` (mmpretrain's batch
            augments) unset: mixing happens here.
    """

    def __init__(self, *args, mix=dict(type='TLAlignMix'), align=True, token_loss=None,
                 log_drift=True, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.data_preprocessor, 'batch_augments', None) is not None:
            raise UserInputError(
                'TLAlignClassifier mixes batches itself, but the data preprocessor also has '
                'batch augments (model.train_cfg.augments, e.g. from an inherited DeiT config); '
                'set `model.train_cfg=None` (or data_preprocessor.batch_augments=None).')
        self.label_rule = build_label_rule(align)
        self.label_rule.check_backbone(self.backbone)
        self.mixer = mix if isinstance(mix, BatchMixer) else MODELS.build(mix)
        self.mixer.check_backbone(self.backbone)
        self._check_num_classes()
        self.token_loss_cfg = build_token_loss_config(token_loss)
        if self.token_loss_cfg is not None:
            self._check_token_loss()
            if self.token_loss_cfg.head == 'separate':  # registered last: see build_token_head
                self.token_head = build_token_head(self.backbone.token_channels,
                                                   self.num_classes)
        if self.label_rule.needs_token_head:  # e.g. SMMix's fine-grained token loss
            if self.token_loss_cfg is not None:
                raise UserInputError(f'{self.label_rule!r} brings its own token loss; set '
                                     'token_loss=None.')
            self.token_head = build_token_head(self.backbone.token_channels, self.num_classes)
        # what the backbone's aligned pass traced (label drift, share maps), step by step
        self._traced = []
        self._drift_blocks = None  # number of traced blocks, once a batch was traced
        self.log_drift = log_drift
        if log_drift and hasattr(self.backbone, 'forward_aligned'):
            self.backbone.trace_sink = self._traced
        #: set by :class:`mmtlalign.engine.ShareMapHook` for the steps it draws: ``loss()``
        #: then keeps the mixed batch and its traces in :attr:`last_mix` (detached)
        self.keep_mix = False
        self.last_mix = None

    def init_weights(self):
        """As the parent's, with the extra ``token_head`` (SMMix's, or ``token_loss``'s
        ``head='separate'``) left out: a model-level ``init_cfg`` (TruncNormal on every
        Linear) would otherwise draw its weights before the backbone's own init, and the same
        seed would give the arms with it other backbone weights. It keeps the initialisation
        :func:`build_token_head` gave it under a forked random state."""
        token_head = self._modules.pop('token_head', None)
        try:
            super().init_weights()
        finally:
            if token_head is not None:
                self._modules['token_head'] = token_head

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
            dict[str, Tensor]: the head's losses (with ``token_loss``: ``loss_cls`` and
            ``loss_token``), ``token_fluctuation`` and the ``drift/*`` scalars.
        """
        labels = torch.cat([sample.gt_label for sample in data_samples]).to(inputs.device)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise UserInputError(f'label {bad} is out of range for head.num_classes='
                             f'{self.num_classes}; set model.head.num_classes to the number of '
                             'classes of the dataset.')
        mixed = self._mix(inputs)
        if getattr(self.label_rule, 'needs_fg_mask', False):  # the oracle (ContentLabel)
            mixed.fg_mask = stack_fg_masks([s.get('fg_mask') for s in data_samples],
                                           inputs.shape[-2:],
                                           repr(self.label_rule)).to(inputs.device)
        self._traced.clear()
        if self.token_loss_cfg is not None:
            losses, share = self._dense_loss(inputs, data_samples, labels, mixed)
        else:
            tokens = None
            if self.label_rule.needs_tokens:
                feats, share, tokens, _ = self.label_rule(self.backbone, mixed, dense=True)
            else:
                feats, share = self.label_rule(self.backbone, mixed)
            losses = self._class_token_loss(feats, share, data_samples, labels, mixed, tokens)
            losses.setdefault('token_fluctuation',
                              (share - mixed.area_share).abs().mean().detach())
        if 'loss' in losses and any('loss' in k for k in losses if k != 'loss'):
            # one part of several: mmengine's parse_losses logs the sum of every 'loss' key
            # as 'loss', then a part named 'loss' overwrites that total in the log
            losses['loss_cls'] = losses.pop('loss')
        losses.update(self._drift(mixed, share))
        if self.keep_mix:
            self._keep(mixed, labels, share)
        return losses

    def _drift(self, mixed, share):
        """``drift/block_XX`` (one per block) and ``drift/final``: scalar tensors (see the
        class docstring); empty when the rule does not trace or ``log_drift`` is off."""
        if not self.log_drift:
            return {}
        if self._traced:
            blocks = self._traced[-1]['blocks']  # (num_blocks, B)
            self._drift_blocks = len(blocks)
            per_block = (blocks - mixed.area_share.float()).abs().mean(dim=1)
        elif mixed.uniform and self._drift_blocks:  # untraced: uniform shares never drift
            per_block = mixed.area_share.new_zeros(self._drift_blocks, dtype=torch.float32)
        else:
            return {}
        drift = {f'drift/block_{i:02d}': d for i, d in enumerate(per_block.unbind(), 1)}
        drift['drift/final'] = (share - mixed.area_share).abs().mean().detach().float()
        return drift

    def _keep(self, mixed, labels, share):
        """Keep this step's mixed batch and its traced share maps in :attr:`last_mix`."""
        traced = self._traced[-1] if self._traced else None
        self.last_mix = dict(
            inputs=mixed.inputs.detach(), labels=labels, partner=mixed.partner,
            mixed=mixed.mixed,
            token_share=mixed.token_share.detach(), area_share=mixed.area_share.detach(),
            share=share.detach(), maps=[m.detach() for m in traced['maps']] if traced else None)

    def _mix(self, inputs):
        """The mixed batch; a mixer that chooses with the model (SMMix) gets its no-grad pass."""
        if self.mixer.needs_motivation:
            return self.mixer(inputs, self.patch_size, motivate=self.motivation_pass)
        return self.mixer(inputs, self.patch_size)

    @torch.no_grad()
    def motivation_pass(self, inputs):
        """SMMix's pass on the unmixed batch: eval mode (no dropout / drop path), no gradient.

        Returns:
            tuple: (B, K) logits and (B, N) the attention each patch receives from the patches
            in the head's block (:func:`mmtlalign.models.smmix.received_attention`).
        """
        training = self.training
        self.eval()
        try:
            feats, scores = received_attention(self.backbone, inputs)
            logits = self.head(self.neck(feats) if self.with_neck else feats)
        finally:
            self.train(training)
        return logits, scores

    def _class_token_loss(self, feats, share, data_samples, labels, mixed, tokens=None):
        """The head's loss against the aligned soft target of the (B,) output shares; for a
        rule with its own terms (``uses_logits``: PAL, SMMix) also those, with the logits."""
        if self.with_neck:
            feats = self.neck(feats)
        target = aligned_target(labels, mixed.partner, share, self.num_classes)
        for sample, score in zip(data_samples, target):
            sample.set_gt_score(score)
        if not self.label_rule.uses_logits:
            return self.head.loss(feats, data_samples)
        logits = self.head(feats)
        terms = self.label_rule.loss_terms(RuleLossInputs(
            logits=logits, share=share, mixed=mixed, labels=labels,
            num_classes=self.num_classes, tokens=tokens,
            token_head=getattr(self, 'token_head', None)))
        if 'share' in terms:  # the rule's own output share (PAL's, from the logits)
            terms['token_fluctuation'] = (terms.pop('share') -
                                          mixed.area_share).abs().mean().detach()
        if 'loss' not in terms:  # the head's loss against the share's target
            terms.update(self.head._get_loss(logits, data_samples))
        return terms

    def _dense_loss(self, inputs, data_samples, labels, mixed):
        """:meth:`loss` with the token loss: the class-token loss plus ``loss_token``;
        returns the losses and the (B,) output shares.

        The label rule runs the backbone once in its dense form: the (B, N, C) output tokens
        and, for TL-Align, their traced (B, N) shares come from the same pass as ``outs``.
        """
        feats, share, tokens, traced = self.label_rule(self.backbone, mixed, dense=True)
        losses = self._class_token_loss(feats, share, data_samples, labels, mixed)
        token_share = self._token_share(inputs, mixed, traced, tokens.shape[1])
        losses['loss_token'] = self.token_loss_cfg.weight * self._token_loss(
            tokens, token_targets(labels, mixed.partner, token_share, self.num_classes))
        losses.setdefault('token_fluctuation', (share - mixed.area_share).abs().mean().detach())
        return losses, share

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
