"""The label-rule interface and its registry.

A label rule decides what a CutMix/Mixup-mixed image is labelled as. With two images per mix
every rule's target is ``(1 - s) * y_a + s * y_b``, so a rule only has to give ``s``, the partner
share (B,) of the output the head consumes. It gets the mixed batch (:class:`MixedBatch`) and
runs the backbone's forward pass itself, once, to read what that pass exposes (attention); the
classifier builds the target from ``s`` and does not know which rule it runs.

Rules are registered in :data:`mmtlalign.registry.LABEL_RULES` (a child of mmpretrain's
``MODELS``) and selected by the classifier's ``align`` argument: ``True`` (TL-Align), ``False``
(area), a type name such as ``'TransMixLabel'`` or a config dict ``dict(type=..., ...)``.
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from torch import Tensor, nn

from ...errors import UserInputError
from ...registry import LABEL_RULES

if TYPE_CHECKING:
    from ..mixing import MixedBatch

#: what a rule returns: ``(outs, share)``, with ``dense`` ``(outs, share, tokens, token_shares)``
RuleOutput = Union[Tuple[Any, Tensor], Tuple[Any, Tensor, Tensor, Optional[Tensor]]]

__all__ = ['LABEL_RULES', 'LabelRule', 'RuleLossInputs', 'build_label_rule']


@dataclass
class RuleLossInputs:
    """What a rule with its own loss terms (:meth:`LabelRule.loss_terms`) gets after the head.

    Attributes:
        logits (Tensor): (B, K) the head's logits of this forward (with gradient).
        share (Tensor): (B,) the share :meth:`LabelRule.mixed_share` gave.
        mixed (MixedBatch): the mixed batch.
        labels (Tensor): (B,) class indices.
        num_classes (int): K.
        tokens (Tensor, optional): (B, N, C) output tokens (rules with ``needs_tokens``).
        token_head (nn.Module, optional): the classifier's ``token_head`` (rules with
            ``needs_token_head``).
    """
    logits: Tensor
    share: Tensor
    mixed: 'MixedBatch'
    labels: Tensor
    num_classes: int
    tokens: Optional[Tensor] = None
    token_head: Optional[nn.Module] = None


class LabelRule:
    """Interface of a label rule: ``rule(backbone, mixed) -> (outs, share)``.

    Subclasses implement :meth:`check_backbone` and :meth:`mixed_share`. Batches whose tokens
    all have their image's area share (Mixup, or no mix) are handled here for every rule:
    attention cannot make uniform shares non-uniform, so the area share is exact for all.
    """

    #: whether ``mixed_share(..., dense=True)`` gives each output token's traced share
    #: (``labels='traced'`` of the classifier's token loss needs it)
    traces_tokens: bool = False
    #: the rule adds loss terms that read the head's logits (:meth:`loss_terms`)
    uses_logits: bool = False
    #: :meth:`loss_terms` also needs the (B, N, C) output tokens (the dense forward)
    needs_tokens: bool = False
    #: the classifier builds a linear ``token_head`` (C -> K) for :meth:`loss_terms`
    needs_token_head: bool = False

    def loss_terms(self, inputs: RuleLossInputs) -> dict:
        """Loss terms of the rule's own method besides the class-token loss, for rules with
        ``uses_logits``; a ``'loss'`` entry *replaces* the head's loss against the share's
        target and a ``'share'`` entry ((B,), no gradient) the share that is logged."""
        return {}

    def check_backbone(self, backbone: nn.Module) -> None:
        """Raise :class:`UserInputError` (at build time) if the rule cannot run on it."""

    def mixed_share(self, backbone: nn.Module, mixed: 'MixedBatch',
                    dense: bool = False) -> RuleOutput:
        """Run ``backbone`` once on ``mixed.inputs`` (a batch with a non-uniform share map).

        Args:
            backbone (nn.Module): the classifier's backbone.
            mixed (MixedBatch): the mixed batch.
            dense (bool): run the backbone's ``forward_tokens`` (or its dense
                ``forward_aligned``) instead of ``forward``, for dense token labels.

        Returns:
            tuple: the backbone's ``outs``, exactly as its ``forward`` returns them, and the
            (B,) partner share of the output, without gradient. With ``dense`` also the
            (B, N, C) output tokens and their (B, N) traced partner shares, or None for a
            rule that does not trace tokens (:attr:`traces_tokens`).
        """
        raise NotImplementedError

    def __call__(self, backbone: nn.Module, mixed: 'MixedBatch',
                 dense: bool = False) -> RuleOutput:
        """(outs, (B,) partner share) for a mixed batch, with ``dense`` also (tokens, token
        shares or None); see :meth:`mixed_share`."""
        if mixed.uniform:
            if dense:  # uniform shares stay uniform: every token's is the area share
                outs, tokens = backbone.forward_tokens(mixed.inputs)
                return outs, mixed.area_share, tokens, None
            return backbone(mixed.inputs), mixed.area_share
        if dense:
            return self.mixed_share(backbone, mixed, dense=True)
        return self.mixed_share(backbone, mixed)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def build_label_rule(align: Union[bool, str, dict, LabelRule]) -> LabelRule:
    """The rule a classifier's ``align`` names.

    Args:
        align (bool | str | dict | LabelRule): ``True``: TL-Align (``'TLAlignLabel'``);
            ``False``: the area share of plain CutMix (``'AreaLabel'``); a registered type
            name, or a config dict ``dict(type=NAME, ...)``.

    Returns:
        LabelRule
    """
    if isinstance(align, LabelRule):
        return align
    if isinstance(align, bool):
        align = 'TLAlignLabel' if align else 'AreaLabel'
    if isinstance(align, str):
        align = dict(type=align)
    if not isinstance(align, dict) or 'type' not in align:
        raise UserInputError(f'model.align must be True (TL-Align), False (area labels of plain '
                             f'CutMix), a label rule\'s name (e.g. \'TransMixLabel\') or '
                             f'dict(type=...), got {align!r}.')
    name = align['type']
    known = sorted(LABEL_RULES.module_dict)
    if isinstance(name, str) and name.split('.')[-1] not in known:
        raise UserInputError(f'unknown label rule {name!r} in model.align; choose one of '
                             f'{known} (or True / False).')
    # the rules live in the 'mmtlalign' scope, whatever the config's default_scope is
    return LABEL_RULES.build(dict(align, _scope_='mmtlalign'))
