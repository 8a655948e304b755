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
"""
import torch
import torch.nn.functional as F

#: zero channels appended to q and k so the fused kernel keeps equal head dims (see
#: :func:`attention_with_share`); 8 keeps the SIMD-friendly alignment of the head dim.
SHARE_CHANNELS = 8


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
    """
    return torch.lerp(share, attended_share, residual_weight)


def attend_share(attn, share):
    """``A_mean @ s`` from an explicit attention tensor.

    Args:
        attn (Tensor): (B, heads, N, N) post-softmax attention (rows sum to one).
        share (Tensor): (B, N).

    Returns:
        Tensor: (B, N).
    """
    return torch.einsum('bij,bj->bi', attn.detach().mean(dim=1), share)


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
        Tensor: (B, N); rows whose query has no valid key return 0.
    """
    a = attn.detach().mean(dim=1)
    valid = valid.to(a.dtype).expand_as(share)
    num = torch.einsum('bij,bj->bi', a, share * valid)
    den = torch.einsum('bij,bj->bi', a, valid)
    return num / den.clamp_min(torch.finfo(a.dtype).tiny)


def attention_with_share(q, k, v, share, dropout_p=0.):
    """Fused attention (``F.scaled_dot_product_attention``) and ``A_mean @ s`` in one call.

    The share rides along as extra value channels. Fused kernels require q, k and v to have
    one head dim, so q and k get :data:`SHARE_CHANNELS` zero channels (their dot products, and
    so the attention, are unchanged; the softmax scale is passed explicitly) and v gets the
    share channels plus zeros. The feature channels are bit-identical to the plain call
    (checked by the tests) and no (B, heads, N, N) tensor is materialised. On CPU the backward
    pass is the plain call's own flash backward on the unpadded q, k, v (see
    :class:`_CPUAttentionWithShare`), so training costs what upstream costs plus the wider
    forward.

    Args:
        q, k, v (Tensor): (B, heads, N, D).
        share (Tensor): (B, N), or (B, N, C) with ``C <= SHARE_CHANNELS`` to carry several
            per-token values at once (e.g. the share and a patch indicator).
        dropout_p (float): attention dropout. Labels are traced *before* dropout, so with
            dropout the share is computed by a separate gradient-free call.

    Returns:
        tuple[Tensor, Tensor]: features (B, heads, N, D), exactly as the plain call gives them,
        and ``A_mean @ s`` with the shape of ``share``, detached.
    """
    B, heads, N, D = q.shape
    values = share if share.dim() == 3 else share[..., None]
    C = values.shape[-1]
    if C > SHARE_CHANNELS:
        raise ValueError(f'at most {SHARE_CHANNELS} share channels ride along, got {C}.')
    values = values[:, None].to(v.dtype).expand(B, heads, N, C)
    if dropout_p > 0:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        with torch.no_grad():
            attended = F.scaled_dot_product_attention(q, k, values.contiguous())
    else:
        pad = q.new_zeros(B, heads, N, SHARE_CHANNELS)
        share_v = torch.cat([values, pad[..., C:]], dim=-1).detach()
        if q.device.type == 'cpu' and _CPUAttentionWithShare.available():
            out, attended = _CPUAttentionWithShare.apply(q, k, v, pad, share_v, C)
        else:
            out = F.scaled_dot_product_attention(
                torch.cat([q, pad], dim=-1), torch.cat([k, pad], dim=-1),
                torch.cat([v, share_v], dim=-1), scale=D**-0.5)
            out, attended = out[..., :D], out[..., D:D + C].detach()
    attended = attended.mean(dim=1).to(share.dtype)
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


def merge_share_2x2(share_map, valid=None):
    """Share of patch-merged tokens: the mean of each 2x2 group of real (non-padded) sources.

    Args:
        share_map (Tensor): (B, H, W); H and W may be odd (the merge pads like the backbone).
        valid (Tensor, optional): (B, H, W) 1 for real tokens. Defaults to all real.

    Returns:
        Tensor: (B, ceil(H/2), ceil(W/2)).
    """
    if valid is None:
        valid = torch.ones_like(share_map)
    H, W = share_map.shape[-2:]
    pad = (0, W % 2, 0, H % 2)
    num = F.avg_pool2d(F.pad(share_map * valid, pad)[:, None], 2)[:, 0]
    den = F.avg_pool2d(F.pad(valid.to(share_map.dtype), pad)[:, None], 2)[:, 0]
    return num / den.clamp_min(torch.finfo(share_map.dtype).tiny)


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
