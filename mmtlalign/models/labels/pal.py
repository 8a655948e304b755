"""MixPro's Progressive Attention Labeling (Zhao et al., ICLR 2023)."""
import torch
import torch.nn.functional as F
from mmpretrain.models import VisionTransformer

from ...errors import UserInputError, UserTypeError
from ..vit import check_fused_attention
from .base import LABEL_RULES
from .transmix import TransMixLabel


@LABEL_RULES.register_module()
class PALLabel(TransMixLabel):
    """PAL as in fistyee/MixPro ``main.py:287-311``, on MaskMix batches.

    With ``s_attn`` TransMix's attention share (the last block's class-token attention to the
    partner's patches over that to all patches, head-mean, before attention dropout, detached)
    and ``s_area`` the area share, the partner share is

        s = alpha * s_attn + (1 - alpha) * s_area,   alpha = cos(t_area, softmax(z)),

    per image, with ``t_area = (1 - s_area) * y~_a + s_area * y~_b`` the label-smoothed area
    target and ``z`` the logits of this forward. The loss replaces the head's:
    ``mean_b[(1 - s) CE(z, y_a) + s CE(z, y_b)]`` with **hard** labels (no smoothing on PAL
    batches, as released). ``alpha`` keeps its gradient as released (the target then has one:
    ``detach_alpha=True`` removes it). Other batches (Mixup/CutMix of an alternation) get the
    head's loss against the area target. Needs a ViT with a class token.

    Args:
        label_smooth (float): epsilon of ``t_area`` (0.1 as released).
        detach_alpha (bool): stop the gradient through alpha (the release does not).
    """
    uses_logits = True

    def __init__(self, label_smooth=0.1, detach_alpha=False):
        super().__init__(attn_weight=1.0)  # mixed_share gives s_attn itself
        if not 0 <= label_smooth < 1:
            raise UserInputError(f'PALLabel label_smooth must lie in [0, 1), got '
                                 f'{label_smooth}.')
        self.label_smooth = label_smooth
        self.detach_alpha = detach_alpha

    def check_backbone(self, backbone):
        name = type(backbone).__name__
        if (not isinstance(backbone, VisionTransformer) or not backbone.with_cls_token
                or backbone.out_type != 'cls_token'):
            raise UserTypeError(
                f'PAL (mixpro) reads the class token\'s attention; {name} has no class-token '
                'output. Use a ViT with with_cls_token=True and out_type=\'cls_token\', or '
                'align=False (maskmix: MaskMix with area labels) for this backbone.')
        check_fused_attention(backbone)

    def mixed_share(self, backbone, mixed, dense=False):
        if mixed.kind != 'maskmix':  # the other branch of an alternation: area labels
            if dense:
                outs, tokens = backbone.forward_tokens(mixed.inputs)
                return outs, mixed.area_share, tokens, None
            return backbone(mixed.inputs), mixed.area_share
        return super().mixed_share(backbone, mixed, dense)  # s_attn (attn_weight 1)

    def loss_terms(self, inputs):
        mixed = inputs.mixed
        if mixed.kind != 'maskmix':
            return {}
        K, eps = inputs.num_classes, self.label_smooth
        y_a = F.one_hot(inputs.labels, K).to(inputs.logits.dtype)
        y_b = y_a[mixed.partner]
        s_area = mixed.area_share.to(y_a.dtype)[:, None]
        t_area = torch.lerp(y_a, y_b, s_area) * (1 - eps) + eps / K
        alpha = F.cosine_similarity(t_area, inputs.logits.softmax(dim=1), dim=1)[:, None]
        if self.detach_alpha:
            alpha = alpha.detach()
        s = alpha * inputs.share.detach().to(y_a.dtype)[:, None] + (1 - alpha) * s_area
        log_p = inputs.logits.log_softmax(dim=1)
        ce_a, ce_b = -(y_a * log_p).sum(1), -(y_b * log_p).sum(1)
        loss = ((1 - s[:, 0]) * ce_a + s[:, 0] * ce_b).mean()
        return dict(loss=loss, share=s[:, 0].detach())

    def __repr__(self):
        return f'PALLabel(label_smooth={self.label_smooth}, detach_alpha={self.detach_alpha})'
