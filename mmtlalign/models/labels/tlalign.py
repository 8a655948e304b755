"""TL-Align: labels traced through every block with the block's own attention."""
from ...errors import UserTypeError
from .base import LABEL_RULES, LabelRule


@LABEL_RULES.register_module()
class TLAlignLabel(LabelRule):
    """Token-Label Alignment (Xiao et al., ICCV 2023): ``s <- (1 - r) * s + r * (A_mean @ s)``
    in every block, the output's share read from the traced tokens (see
    :mod:`mmtlalign.models.alignment`). Runs the backbone's ``forward_aligned``
    (:class:`AlignedVisionTransformer`, :class:`AlignedSwinTransformer`); the residual weight r
    is the backbone's ``residual_weight``. Selected by ``align=True``."""

    def check_backbone(self, backbone):
        if not hasattr(backbone, 'forward_aligned'):
            raise UserTypeError(
                f'TL-Align needs a backbone with forward_aligned(x, token_share); '
                f'{type(backbone).__name__} has none. Use AlignedVisionTransformer or '
                'AlignedSwinTransformer (same arguments and checkpoints as the mmpretrain '
                'ones), or set align=False for the plain-CutMix baseline.')

    traces_tokens = True

    def mixed_share(self, backbone, mixed, dense=False):
        if dense:  # the same pass also gives the output tokens and their traced shares
            return backbone.forward_aligned(mixed.inputs, mixed.token_share, dense=True)
        return backbone.forward_aligned(mixed.inputs, mixed.token_share)
