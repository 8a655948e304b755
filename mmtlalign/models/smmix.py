"""SMMix's mixer (Chen et al., ICCV 2023): the partner's most attended square moved onto the
image's least attended one, chosen by a no-grad pass of the model being trained."""
import torch
import torch.nn.functional as F
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from ..errors import UserInputError, UserTypeError
from .mixing import BatchMixer, MixedBatch, flip_partners
from .vit import attention_replaced, check_fused_attention


class _ReceivedAttention:
    """Attention call for the last block that also keeps, per patch, the attention it
    receives from the patch queries (the explicit attention: used in a no-grad pass only)."""

    def __init__(self, num_extra_tokens):
        self.extra = num_extra_tokens
        self.scores = None  # (B, N)

    def attention(self, q, k, v, dropout_p=0.):
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1]**-0.5, dim=-1)
        e = self.extra
        # mean over heads and over the patch queries, patch keys only (class row/column out)
        self.scores = attn[:, :, e:, e:].mean(dim=(1, 2))
        return attn @ v


def check_scorable(backbone):
    """Raise unless :func:`received_attention` can score ``backbone``."""
    if not isinstance(backbone, VisionTransformer):
        raise UserTypeError(
            f'SMMix scores patches by the attention they receive in the last ViT block; '
            f'{type(backbone).__name__} is not a VisionTransformer. Use a ViT backbone, or '
            'another mixer (BlockMaskMix, MaskMix, TLAlignMix) for this one.')
    check_fused_attention(backbone)


def received_attention(backbone, images):
    """The backbone's outputs and, per patch token, the attention it receives in the block the
    head reads: softmax before attention dropout, mean over heads and over the patch queries
    (SMMix ``deit.py:82-84,235,290``). Run without gradient.

    Args:
        backbone (VisionTransformer): the model's backbone.
        images (Tensor): (B, C, H, W).

    Returns:
        tuple: ``outs`` as ``backbone(images)`` returns them, (B, N) scores.
    """
    probe = _ReceivedAttention(backbone.num_extra_tokens)
    last = backbone.layers[max(backbone.out_indices)]
    with attention_replaced([last], probe.attention):
        outs = backbone(images)
    return outs, probe.scores


def window_starts(grid, side):
    """(W,) row-major token index of the top-left cell of every ``side x side`` window fully
    inside the ``grid`` (stride 1), in row-major window order."""
    gh, gw = grid
    rows = torch.arange(gh - side + 1)[:, None] * gw
    return (rows + torch.arange(gw - side + 1)[None]).flatten()


@MODELS.register_module()
class SMMix(BatchMixer):
    """SMMix as released (ChenMnZ/SMMix ``smmix.py:66-130``).

    Per batch a square side ``s`` is drawn uniformly from ``int(side * min_side_ratio) ..
    int(side * max_side_ratio)`` (3..10 on 14 x 14 tokens), side = the shorter grid side. The
    model scores every patch token (:func:`received_attention`, run by the classifier in eval
    mode without gradient on the unmixed batch); each image's least attended ``s x s`` window
    (sum of scores, first on ties) receives, in the same layout, the tokens of its partner's
    (image ``B - 1 - i``) most attended window. Partner share ``s^2 / N``.

    Random draws: ``integers(s_min, s_max + 1)`` from the mixer's generator.

    Args:
        min_side_ratio (float), max_side_ratio (float): 0.25 and 0.75 as released.
        seed (int, optional): see :class:`BatchMixer`.
    """
    needs_motivation = True

    def __init__(self, min_side_ratio=0.25, max_side_ratio=0.75, seed=None):
        if not 0 <= min_side_ratio <= max_side_ratio <= 1:
            raise UserInputError(f'SMMix needs 0 <= min_side_ratio <= max_side_ratio <= 1, got '
                                 f'{min_side_ratio}, {max_side_ratio}.')
        super().__init__(seed)
        self.min_side_ratio = min_side_ratio
        self.max_side_ratio = max_side_ratio

    def check_backbone(self, backbone):
        check_scorable(backbone)

    def side_range(self, grid):
        side = min(grid)
        lo = max(1, int(side * self.min_side_ratio))
        return lo, max(lo, int(side * self.max_side_ratio))

    def __call__(self, inputs, patch_size, motivate=None):
        """Mix a batch.

        Args:
            inputs (Tensor): (B, C, H, W) images.
            patch_size (tuple[int, int]): the backbone's patch size.
            motivate (callable): ``images -> ((B, K) logits, (B, N) patch scores)``, the
                model's no-grad pass (:meth:`TLAlignClassifier.motivation_pass`).

        Returns:
            MixedBatch: of kind ``'smmix'``, ``aux['motivation_logits']`` the (B, K) logits.
        """
        if motivate is None:
            raise UserInputError('SMMix chooses its regions with the model being trained; use '
                                 'it as the mix of a TLAlignClassifier.')
        grid = self.token_grid(inputs, patch_size)
        B, N = inputs.shape[0], grid[0] * grid[1]
        if B < 2:
            return self.unmixed(inputs, grid)
        lo, hi = self.side_range(grid)
        side = int(self.rng.integers(lo, hi + 1))
        logits, scores = motivate(inputs)
        partner = flip_partners(B, inputs.device)

        sums = F.avg_pool2d(scores.reshape(B, 1, *grid).float(), side, stride=1).flatten(1)
        starts = window_starts(grid, side).to(inputs.device)
        offsets = window_starts((side, side), 1).to(inputs.device)  # cells of one window
        offsets = (offsets // side) * grid[1] + offsets % side
        target = starts[sums.argmin(dim=1)][:, None] + offsets          # (B, s^2)
        source = starts[sums.argmax(dim=1)][partner][:, None] + offsets

        tokens = _to_tokens(inputs, patch_size)                          # (B, N, D)
        moved = tokens[partner].gather(1, source[..., None].expand(-1, -1, tokens.shape[-1]))
        tokens = tokens.scatter(1, target[..., None].expand_as(moved), moved)
        token_share = inputs.new_zeros(B, N).scatter(1, target, 1.0)
        return MixedBatch(inputs=_from_tokens(tokens, inputs.shape, patch_size),
                          partner=partner, token_share=token_share,
                          area_share=token_share.mean(dim=1), uniform=False, kind='smmix',
                          aux=dict(motivation_logits=logits))

    def __repr__(self):
        return (f'SMMix(min_side_ratio={self.min_side_ratio}, '
                f'max_side_ratio={self.max_side_ratio})')


def _to_tokens(images, patch_size):
    """(B, C, H, W) -> (B, N, C * ph * pw), patches row-major."""
    B, C, H, W = images.shape
    ph, pw = patch_size
    x = images.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // ph) * (W // pw), C * ph * pw)


def _from_tokens(tokens, shape, patch_size):
    """Inverse of :func:`_to_tokens`."""
    B, C, H, W = shape
    ph, pw = patch_size
    x = tokens.reshape(B, H // ph, W // pw, C, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C, H, W)
