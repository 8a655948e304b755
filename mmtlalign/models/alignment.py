"""The TL-Align rule in its exact one-number-per-token form.

Framework-free (plain torch, no mmengine/mmpretrain), so that it can be read and tested alone.

With a two-image mix, every token label is a convex combination of the two image labels
``y_a`` (the image itself) and ``y_b`` (its partner), and TL-Align propagates labels linearly
with row-stochastic matrices. Hence the K-dimensional label of a token is exactly
``(1 - s) * y_a + s * y_b`` where ``s`` is the token's *partner share*, and the rule of the paper
(``Y <- (1 - r) * Y + r * (A_mean @ Y)`` per block) becomes the same rule on ``s``:

    s <- (1 - r) * s + r * (A_mean @ s)

``A_mean`` is the head-averaged softmax attention taken before attention dropout, without
gradient. LayerNorm, MLP and drop-path leave labels unchanged.

**Precision.** Shares are kept and propagated in float32 whatever the autocast state (fp16 or
bf16 mixed precision, any device): the label arithmetic below runs with autocast disabled, and
the attention that feeds it is cast up first. Under autocast the attention itself is the
half-precision one the features use, so a traced share differs from the float32 trace by about
the half type's resolution, never by a crash or a clamp that rounds to zero.
"""
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..errors import UserInputError

#: zero channels appended to q and k so the fused kernel keeps equal head dims (see
#: :func:`attention_with_share`); 8 keeps the SIMD-friendly alignment of the head dim, and is
#: the value width that CUDA's memory-efficient kernel accepts in fp32 and in half precision.
SHARE_CHANNELS = 8

#: How :func:`attention_with_share` obtains ``A_mean @ s`` (see there):
#: ``'auto'`` (CPU: ``'cpu_flash'`` when torch has it, elsewhere ``'separate'``),
#: ``'cpu_flash'`` (CPU tensors only), ``'separate'``, or the experimental opt-in
#: ``'cuda_flash'`` (CUDA, fp16/bf16; **not yet run on a GPU by any test here**). Set by the
#: environment variable ``MMTLALIGN_SHARE_ATTENTION`` or, in code, with
#: :func:`share_attention_impl`.
SHARE_ATTENTION_IMPLS = ('auto', 'cpu_flash', 'separate', 'cuda_flash')
_share_attention = os.environ.get('MMTLALIGN_SHARE_ATTENTION', 'auto')


def _check_impl(impl):
    if impl not in SHARE_ATTENTION_IMPLS:
        raise UserInputError(f'unknown share attention implementation {impl!r} (from '
                             'MMTLALIGN_SHARE_ATTENTION or share_attention_impl); choose one of '
                             f'{SHARE_ATTENTION_IMPLS}.')
    return impl


@contextmanager
def share_attention_impl(impl):
    """Use ``impl`` (one of :data:`SHARE_ATTENTION_IMPLS`) inside the ``with`` block."""
    global _share_attention
    previous, _share_attention = _share_attention, _check_impl(impl)
    try:
        yield
    finally:
        _share_attention = previous


def resolve_share_attention(device_type):
    """The implementation :func:`attention_with_share` runs for tensors on ``device_type``."""
    impl = _check_impl(_share_attention)
    if impl == 'auto':
        cpu = device_type == 'cpu' and _CPUAttentionWithShare.available()
        return 'cpu_flash' if cpu else 'separate'
    if impl == 'cpu_flash' and device_type != 'cpu':
        raise UserInputError(f"share attention 'cpu_flash' runs on CPU tensors only, got "
                             f"{device_type}; use 'auto' or 'separate'.")
    if impl == 'cuda_flash' and device_type != 'cuda':
        raise UserInputError(f"share attention 'cuda_flash' runs on CUDA tensors only, got "
                             f"{device_type}; use 'auto' or 'separate'.")
    return impl


@contextmanager
def float32_share_math(tensor):
    """Autocast off for the label arithmetic on ``tensor``'s device: under autocast,
    ``einsum`` and ``matmul`` run in half precision whatever their inputs' dtype."""
    with torch.autocast(tensor.device.type, enabled=False):
        yield


def token_share_from_mask(mask, grid_size):
    """Partner share of each patch token from a pixel mask.

    Args:
        mask (Tensor): (B, H, W), 1 where the pixel comes from the partner image, 0 where it
            comes from the image itself; fractional values are allowed (soft masks).
        grid_size (tuple[int, int]): (gh, gw) the token grid; H and W must be multiples.

    Returns:
        Tensor: (B, gh * gw), the mean of the mask over each patch, row-major.
    """
    B, H, W = mask.shape
    gh, gw = grid_size
    if H % gh or W % gw:
        raise ValueError(f'mask of size {H}x{W} does not tile into a {gh}x{gw} token grid; '
                         'the image size must be a multiple of the patch size.')
    pooled = F.avg_pool2d(mask[:, None].float(), kernel_size=(H // gh, W // gw))
    return pooled.flatten(1)


def initial_share(token_share, num_extra_tokens):
    """Prepend the share of extra tokens (class token): the mean patch share = area share.

    Args:
        token_share (Tensor): (B, N) patch shares.
        num_extra_tokens (int): 0 or 1.

    Returns:
        Tensor: (B, num_extra_tokens + N).
    """
    if num_extra_tokens == 0:
        return token_share
    cls_share = token_share.mean(dim=1, keepdim=True)
    return torch.cat([cls_share.expand(-1, num_extra_tokens), token_share], dim=1)


def propagate(share, attended_share, residual_weight=0.5):
    """One block of the rule: ``s <- (1 - r) * s + r * (A_mean @ s)``.

    Args:
        share (Tensor): (B, N) current shares.
        attended_share (Tensor): (B, N) ``A_mean @ s``.
        residual_weight (float): r, 0.5 in the paper.

    Returns:
        Tensor: (B, N) float32.
    """
    with float32_share_math(share):
        return torch.lerp(share.float(), attended_share.float(), residual_weight)


def attend_share(attn, share):
    """``A_mean @ s`` from an explicit attention tensor.

    Args:
        attn (Tensor): (B, heads, N, N) post-softmax attention (rows sum to one).
        share (Tensor): (B, N).

    Returns:
        Tensor: (B, N) float32, whatever the dtype of ``attn`` (autocast is off for it).
    """
    with float32_share_math(share):
        return torch.einsum('bij,bj->bi', attn.detach().float().mean(dim=1), share.float())


def attend_share_masked(attn, share, valid):
    """``A_mean @ s`` renormalised over valid keys only.

    Used where the backbone pads its token map (Swin windows): padded tokens carry no label,
    and the attention that real tokens pay to them is redistributed over the real keys, so
    padding neither dilutes nor creates label mass.

    Args:
        attn (Tensor): (B, heads, N, N).
        share (Tensor): (B, N), arbitrary at invalid positions.
        valid (Tensor): (B, N) or (1, N), 1 for real tokens, 0 for padding.

    Returns:
        Tensor: (B, N) float32; rows whose query has no valid key return 0.
    """
    with float32_share_math(share):
        # float32 throughout: the clamp's tiny would round to 0 in half precision
        a = attn.detach().float().mean(dim=1)
        valid = valid.float().expand_as(share)
        num = torch.einsum('bij,bj->bi', a, share.float() * valid)
        den = torch.einsum('bij,bj->bi', a, valid)
        return num / den.clamp_min(torch.finfo(torch.float32).tiny)


def attention_with_share(q, k, v, share, dropout_p=0.):
    """``F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)`` and ``A_mean @ s``.

    Two implementations (:data:`SHARE_ATTENTION_IMPLS`, chosen by
    :func:`resolve_share_attention`); both return upstream's features and the upstream call's
    gradients, and never materialise a (B, heads, N, N) tensor:

    - ``'cpu_flash'`` (the CPU default): one fused call. The share rides along as extra value
      channels; fused kernels require one head dim for q, k and v, so q and k get
      :data:`SHARE_CHANNELS` zero channels (their dot products, and so the attention, are
      unchanged; the softmax scale is passed explicitly). Its backward is the plain call's own
      flash backward on the unpadded q, k, v (:class:`_CPUAttentionWithShare`), so autograd
      saves what upstream saves. Features are bit-identical to the plain call on CPU.
    - ``'separate'`` (the default on every other device): exactly upstream's call for the
      features (autograd saves exactly what upstream's saves), plus a gradient-free call on the
      same q, k with the share as a narrow value (:data:`SHARE_CHANNELS` channels, so CUDA's
      memory-efficient kernel takes it). Its extra work is one forward attention with an
      8-wide value and no backward.
    - ``'cuda_flash'`` (opt-in, experimental, untested on a GPU): ``'cpu_flash'``'s idea on
      CUDA's flash kernel (:class:`_CUDAFlashAttentionWithShare`), fp16/bf16 only (float32
      inputs take ``'separate'``). Its features are not guaranteed to be bit-identical to the
      plain call (the 72-wide head dim runs other kernel tiles); tests/test_gpu.py checks it.

    Labels are traced *before* attention dropout: with ``dropout_p > 0`` the share always
    comes from the gradient-free call without dropout.

    Args:
        q, k, v (Tensor): (B, heads, N, D).
        share (Tensor): (B, N), or (B, N, C) with ``C <= SHARE_CHANNELS`` to carry several
            per-token values at once (e.g. the share and a patch indicator).
        dropout_p (float): attention dropout of the features.

    Returns:
        tuple[Tensor, Tensor]: features (B, heads, N, D), exactly as the plain call gives them,
        and ``A_mean @ s`` with the shape of ``share``, float32 and detached (under autocast
        the attention is the half-precision one of the features).
    """
    B, heads, N, D = q.shape
    values = share if share.dim() == 3 else share[..., None]
    C = values.shape[-1]
    if C > SHARE_CHANNELS:
        raise ValueError(f'at most {SHARE_CHANNELS} share channels ride along, got {C}.')
    # the kernels want one dtype for q, k, v; under autocast that is the half type
    share_v = F.pad(values.detach()[:, None].to(q.dtype).expand(B, heads, N, C),
                    (0, SHARE_CHANNELS - C))
    impl = resolve_share_attention(q.device.type)
    if dropout_p == 0 and impl == 'cpu_flash':
        pad = q.new_zeros(B, heads, N, SHARE_CHANNELS)
        out, attended = _CPUAttentionWithShare.apply(q, k, v, pad, share_v, C)
    elif dropout_p == 0 and impl == 'cuda_flash' and q.dtype in (torch.float16, torch.bfloat16):
        pad = q.new_zeros(B, heads, N, SHARE_CHANNELS)
        out, attended = _CUDAFlashAttentionWithShare.apply(q, k, v, pad, share_v, C)
    else:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        with torch.no_grad():
            attended = F.scaled_dot_product_attention(q, k, share_v)[..., :C]
    with float32_share_math(attended):
        attended = attended.detach().float().mean(dim=1)
    return out, attended if share.dim() == 3 else attended[..., 0]


class _CPUAttentionWithShare(torch.autograd.Function):
    """CPU flash attention on zero-padded q, k and share-carrying v, whose backward is the
    unpadded call's.

    The padded forward's log-sum-exp equals the unpadded one (q.k is unchanged), so the plain
    flash backward, given the unpadded q, k, v and the feature slice of the output, returns
    exactly upstream's gradients; autograd keeps no padded copies of q, k, v.
    """

    @staticmethod
    def available():
        return hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu_backward')

    @staticmethod
    def forward(ctx, q, k, v, pad, share_v, channels):
        D = q.shape[-1]
        ctx.scale = D**-0.5
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            torch.cat([q, pad], dim=-1), torch.cat([k, pad], dim=-1),
            torch.cat([v, share_v], dim=-1), scale=ctx.scale)
        # features in the memory layout the plain kernel returns, (B, N, heads, D), so that the
        # attention module's transpose+reshape is a view and autograd keeps one copy, as upstream
        feats = out[..., :D].transpose(1, 2).contiguous().transpose(1, 2)
        attended = out[..., D:D + channels].clone()
        ctx.save_for_backward(q, k, v, feats, lse)
        ctx.mark_non_differentiable(attended)
        return feats, attended

    @staticmethod
    def backward(ctx, grad_feats, grad_share):
        q, k, v, feats, lse = ctx.saved_tensors
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_feats, q, k, v, feats, lse, 0.0, False, scale=ctx.scale)
        return (*grads, None, None, None)


class _CUDAFlashAttentionWithShare(torch.autograd.Function):
    """EXPERIMENTAL (opt-in ``'cuda_flash'``; no test here has run it on a GPU yet): CUDA
    flash attention on zero-padded q, k and share-carrying v, whose backward is the unpadded
    call's flash backward, as :class:`_CPUAttentionWithShare` does on CPU.

    fp16/bf16 only (flash attention's dtypes). The padded forward's log-sum-exp equals the
    unpadded one's (q.k is unchanged), so the flash backward given the unpadded q, k, v and
    the feature slice of the output computes upstream's gradients, and autograd saves what the
    plain flash call saves.
    """

    @staticmethod
    def forward(ctx, q, k, v, pad, share_v, channels):
        D = q.shape[-1]
        ctx.scale = D**-0.5
        out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = \
            torch.ops.aten._scaled_dot_product_flash_attention(
                torch.cat([q, pad], dim=-1), torch.cat([k, pad], dim=-1),
                torch.cat([v, share_v], dim=-1), 0.0, False, False, scale=ctx.scale)
        # the plain kernel's output layout, (B, N, heads, D) in memory (see the CPU class)
        feats = out[..., :D].transpose(1, 2).contiguous().transpose(1, 2)
        attended = out[..., D:D + channels].clone()
        ctx.save_for_backward(q, k, v, feats, lse, cum_q, cum_k, seed, offset)
        ctx.max_q, ctx.max_k = max_q, max_k
        ctx.mark_non_differentiable(attended)
        return feats, attended

    @staticmethod
    def backward(ctx, grad_feats, grad_share):
        q, k, v, feats, lse, cum_q, cum_k, seed, offset = ctx.saved_tensors
        grads = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            grad_feats, q, k, v, feats, lse, cum_q, cum_k, ctx.max_q, ctx.max_k,
            0.0, False, seed, offset, scale=ctx.scale)
        return (*grads, None, None, None)


def merge_share_2x2(share_map, valid=None):
    """Share of patch-merged tokens: the mean of each 2x2 group of real (non-padded) sources.

    Args:
        share_map (Tensor): (B, H, W); H and W may be odd (the merge pads like the backbone).
        valid (Tensor, optional): (B, H, W) 1 for real tokens. Defaults to all real.

    Returns:
        Tensor: (B, ceil(H/2), ceil(W/2)) float32.
    """
    share_map = share_map.float()
    valid = torch.ones_like(share_map) if valid is None else valid.float()
    H, W = share_map.shape[-2:]
    pad = (0, W % 2, 0, H % 2)
    with float32_share_math(share_map):
        num = F.avg_pool2d(F.pad(share_map * valid, pad)[:, None], 2)[:, 0]
        den = F.avg_pool2d(F.pad(valid, pad)[:, None], 2)[:, 0]
        return num / den.clamp_min(torch.finfo(torch.float32).tiny)


def aligned_target(labels, partner, share, num_classes):
    """Soft target ``(1 - s) * y_a + s * y_b``.

    Args:
        labels (Tensor): (B,) int class indices of the images.
        partner (Tensor): (B,) int index of each image's partner in the batch.
        share (Tensor): (B,) partner share of the output token(s).
        num_classes (int): K.

    Returns:
        Tensor: (B, K) rows summing to one.
    """
    y_a = F.one_hot(labels, num_classes).to(share.dtype)
    y_b = y_a[partner]
    s = share.detach()[:, None]
    return (1 - s) * y_a + s * y_b
