"""TransMix: labels re-weighted by the class token's attention in the last block."""
import torch
from mmpretrain.models import VisionTransformer

from ...errors import UserInputError, UserTypeError
from .. import alignment
from ..vit import attention_replaced, check_fused_attention
from .base import LABEL_RULES, LabelRule


class ClsAttentionProbe:
    """Drop-in attention call for one block that also returns ``A_mean @ values`` for the class
    token, from the same fused call (no (B, heads, N, N) tensor, no second forward).

    Args:
        values (Tensor): (B, N, C) per-token values that ride along (``C <= 8``).
    """

    def __init__(self, values):
        self.values = values
        self.cls_attended = None  # (B, C), set by the block's attention call

    def attention(self, q, k, v, dropout_p=0.):
        if q.shape[2] != self.values.shape[1]:
            raise UserInputError(f'the mixed batch has {self.values.shape[1]} tokens but the '
                                 f'backbone {q.shape[2]}; the mixer must use the backbone\'s '
                                 'patch size.')
        out, attended = alignment.attention_with_share(q, k, v, self.values, dropout_p)
        self.cls_attended = attended[:, 0]
        return out


@LABEL_RULES.register_module()
class TransMixLabel(LabelRule):
    """TransMix (Chen et al., CVPR 2022).

    Partner share ``s = (1 - w) * area_share + w * lam_attn`` with ``w = 0.5`` and

        lam_attn = (A_mean @ m)_cls / (A_mean @ 1_patch)_cls,

    ``A_mean`` the last block's softmax attention averaged over heads (before attention
    dropout), ``m`` (B, N) the partner share of each patch token (0 on class/extra tokens) and
    ``1_patch`` 1 on patch tokens: the class token's attention to the partner's patches over its
    attention to all patches (its attention to itself excluded). ``m`` and ``1_patch`` ride as
    two value channels of the last block's fused attention call
    (:func:`alignment.attention_with_share`); every other block runs untouched.

    Any mmpretrain :class:`VisionTransformer` with a class token and ``out_type='cls_token'``
    (the plain one or :class:`AlignedVisionTransformer`).

    Args:
        attn_weight (float): w, the weight of the attention share. 0.5 as in TransMix.
    """

    def __init__(self, attn_weight=0.5):
        if not 0 <= attn_weight <= 1:
            raise UserInputError(f'TransMixLabel attn_weight must lie in [0, 1], got '
                                 f'{attn_weight}.')
        self.attn_weight = attn_weight

    def check_backbone(self, backbone):
        name = type(backbone).__name__
        if not isinstance(backbone, VisionTransformer):
            raise UserTypeError(
                f'TransMix labels need a ViT with a class token; {name} has none (TransMix '
                'weighs the patches by the class token\'s attention). Use a VisionTransformer '
                'backbone with out_type=\'cls_token\', or align=True (TL-Align) / align=False '
                '(area labels) for this backbone.')
        if not backbone.with_cls_token or backbone.out_type != 'cls_token':
            raise UserInputError(
                f'TransMix labels read the class token, but this {name} has '
                f'with_cls_token={backbone.with_cls_token}, out_type={backbone.out_type!r}; set '
                'with_cls_token=True and out_type=\'cls_token\', or use align=True (TL-Align) / '
                'align=False (area labels).')
        check_fused_attention(backbone)

    def mixed_share(self, backbone, mixed, dense=False):
        token_share = mixed.token_share.float()
        extra = backbone.num_extra_tokens
        # (B, N, 2): partner share m and patch indicator, both 0 on the class (extra) tokens
        patch = torch.ones_like(token_share)
        values = torch.stack([token_share, patch], dim=-1)
        values = torch.cat([values.new_zeros(len(values), extra, 2), values], dim=1)
        probe = ClsAttentionProbe(values)
        last = backbone.layers[max(backbone.out_indices)]  # the block the head reads after
        with attention_replaced([last], probe.attention):
            if dense:
                outs, tokens = backbone.forward_tokens(mixed.inputs)
            else:
                outs = backbone(mixed.inputs)
        to_partner, to_patches = probe.cls_attended.unbind(dim=-1)
        area = mixed.area_share.to(to_partner.dtype)
        # a class token attending only to itself says nothing about the patches: area share
        lam_attn = torch.where(to_patches > 0, to_partner / to_patches.clamp_min(1e-30), area)
        share = torch.lerp(area, lam_attn, self.attn_weight)
        if dense:  # TransMix labels the class token only: no traced token shares
            return outs, share, tokens, None
        return outs, share

    def __repr__(self):
        return f'TransMixLabel(attn_weight={self.attn_weight})'
