"""SMMix's labels and extra losses (Chen et al., ICCV 2023)."""
import torch.nn.functional as F

from ...errors import UserInputError, UserTypeError
from .area import AreaLabel
from .base import LABEL_RULES


def soft_ce(logits, target):
    """timm's SoftTargetCrossEntropy: mean over rows of ``-sum(target * log_softmax)``."""
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


@LABEL_RULES.register_module()
class SMMixLabel(AreaLabel):
    """SMMix's targets (ChenMnZ/SMMix ``engine.py:45-51``, ``deit.py:279-301``).

    The output (class token) keeps the area share (the head's loss, L_cls). On SMMix batches
    two terms are added, weights 1 as released:

    - ``loss_fine``: the mean of the output patch tokens over the image's own positions and
      over the pasted ones, each classified by the classifier's separate ``token_head``:
      ``1/2 [SCE(head(u_own), y~_a) + SCE(head(u_pasted), y~_b)]`` (smoothed labels);
    - ``loss_consistency``: ``KL(p* || softmax(z))`` (batch mean) with
      ``p* = softmax(lambda z0_a + (1 - lambda) z0_b)``, ``z0`` the logits of the mixer's
      no-grad pass on the unmixed batch, lambda the own share.

    Other batches (Mixup) give both terms as zero (kept in the graph of the token head, so
    distributed training sees every parameter used). Needs per-token output
    (``forward_tokens``: :class:`AlignedVisionTransformer`) and the :class:`SMMix` mixer.

    Args:
        fine_weight (float), consistency_weight (float): 1.0 and 1.0 as released.
        label_smooth (float): epsilon of the token targets (0.1 as released).
    """
    uses_logits = True
    needs_tokens = True
    needs_token_head = True

    def __init__(self, fine_weight=1.0, consistency_weight=1.0, label_smooth=0.1):
        if fine_weight < 0 or consistency_weight < 0 or not 0 <= label_smooth < 1:
            raise UserInputError('SMMixLabel needs fine_weight >= 0, consistency_weight >= 0 '
                                 f'and 0 <= label_smooth < 1, got {fine_weight}, '
                                 f'{consistency_weight}, {label_smooth}.')
        self.fine_weight = fine_weight
        self.consistency_weight = consistency_weight
        self.label_smooth = label_smooth

    def check_backbone(self, backbone):
        if not callable(getattr(backbone, 'forward_tokens', None)):
            raise UserTypeError(
                f'SMMix labels pool the output patch tokens (forward_tokens); '
                f'{type(backbone).__name__} has none. Use AlignedVisionTransformer (same '
                'arguments and checkpoints as mmpretrain\'s VisionTransformer).')

    def loss_terms(self, inputs):
        head, mixed = inputs.token_head, inputs.mixed
        if mixed.kind != 'smmix':
            zero = sum(p.sum() for p in head.parameters()) * 0 + inputs.logits.sum() * 0
            return dict(loss_fine=zero, loss_consistency=zero)
        tokens, logits = inputs.tokens, inputs.logits
        if tokens.shape[1] != mixed.token_share.shape[1]:
            raise UserInputError(f'SMMix labels need one output token per input patch, got '
                                 f'{tokens.shape[1]} output tokens for '
                                 f'{mixed.token_share.shape[1]} patches.')
        pasted = (mixed.token_share > 0.5).to(tokens.dtype)[..., None]
        own = 1 - pasted
        u_own = (tokens * own).sum(1) / own.sum(1)
        u_pasted = (tokens * pasted).sum(1) / pasted.sum(1)
        K, eps = inputs.num_classes, self.label_smooth
        y_a = F.one_hot(inputs.labels, K).to(logits.dtype) * (1 - eps) + eps / K
        fine = 0.5 * (soft_ce(head(u_own), y_a) + soft_ce(head(u_pasted), y_a[mixed.partner]))

        z0 = mixed.aux['motivation_logits'].to(logits.dtype)
        lam = 1 - mixed.area_share.to(logits.dtype)[:, None]
        p_star = (lam * z0 + (1 - lam) * z0[mixed.partner]).softmax(dim=1)
        consistency = F.kl_div(logits.log_softmax(dim=1), p_star, reduction='batchmean')
        return dict(loss_fine=self.fine_weight * fine,
                    loss_consistency=self.consistency_weight * consistency)

    def __repr__(self):
        return (f'SMMixLabel(fine_weight={self.fine_weight}, '
                f'consistency_weight={self.consistency_weight})')
