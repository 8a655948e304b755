"""The K-dimensional TL-Align rule (DESIGN.md section 1), written independently of the share form
that mmtlalign implements, for the tests to compare against.

Every token carries a full label vector (K classes, float64) and every block does
``Y <- (1 - r) Y + r (A Y)`` with ``A`` the head-mean post-softmax attention the block computes
on its own input (r = 1/2 by default). ViT: the attention is recomputed from each block's qkv
projection on the block's input (mmpretrain's fused kernel never materialises it). Swin: the
window attention is the parent's own softmax output (shift mask included), placed back on the
token map window by window with the roll undone, padded keys carrying no label; 2x2 patch
merging averages the real sources. Nothing here imports the code under test.
"""
import torch
import torch.nn.functional as F

K = 10  # classes of the reference label vectors


def mixed_labels(labels, partner, share, num_classes=K):
    """``(1 - share) y_a + share y_b`` in float64.

    Args:
        labels (Tensor): (B, ) class indices of the images.
        partner (Tensor): (B, ) the index of each image's partner in the batch.
        share (Tensor): (B, *S) the partner's share of each token.

    Returns:
        Tensor: (B, *S, K) label vectors.
    """
    y_a = F.one_hot(labels, num_classes).double()
    y_b = y_a[partner]
    s = share.double()[..., None]
    shape = (len(labels), ) + (1, ) * (share.dim() - 1) + (num_classes, )
    return (1 - s) * y_a.view(shape) + s * y_b.view(shape)


# ---- ViT / DeiT ---------------------------------------------------------------------------------
def vit_block_inputs(vit, x):
    """The input of every block's attention (the LayerNorm output, (B, 1 + N, C) each) in one
    no-grad forward of ``vit``."""
    inputs = []
    hooks = [layer.attn.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
             for layer in vit.layers]
    try:
        with torch.no_grad():
            vit(x)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def vit_attention(attn, h):
    """(B, 1 + N, 1 + N) head-mean softmax attention of mmpretrain's ``MultiheadAttention``
    ``attn`` on its input ``h``, explicit and in float64."""
    B, N, _ = h.shape
    with torch.no_grad():
        qkv = attn.qkv(h).reshape(B, N, 3, attn.num_heads, attn.head_dims).permute(2, 0, 3, 1, 4)
    q, k = qkv[0].double(), qkv[1].double()
    return torch.softmax(q @ k.transpose(-2, -1) * attn.head_dims**-0.5, dim=-1).mean(dim=1)


def vit_token_labels(vit, inputs, token_share, labels, partner, r=0.5, num_classes=K):
    """The label of every token after the last block.

    Args:
        vit: the VisionTransformer whose blocks' qkv give the attention.
        inputs (list[Tensor]): each block's attention input, (B, 1 + N, C), e.g. from
            :func:`vit_block_inputs` (or hooks on another pass, such as one with dropout).
        token_share (Tensor): (B, N) the partner's share of each patch; the class token starts
            with the area share (its mean).

    Returns:
        Tensor: (B, 1 + N, K), the class token first.
    """
    area = token_share.double().mean(dim=1, keepdim=True)
    Y = torch.cat([mixed_labels(labels, partner, area, num_classes),
                   mixed_labels(labels, partner, token_share, num_classes)], dim=1)
    for layer, h in zip(vit.layers, inputs):
        Y = (1 - r) * Y + r * (vit_attention(layer.attn, h) @ Y)
    return Y


def vit_output_label(vit, Y):
    """(B, K): the label of what the head consumes, for ``vit.out_type``."""
    if vit.out_type == 'cls_token':
        return Y[:, 0]
    return Y[:, 1:].mean(dim=1)


def vit_output_labels(vit, x, token_share, labels, partner, r=0.5, num_classes=K):
    """(B, K): K-dim TL-Align's label of the output of ``vit`` on the mixed images ``x``."""
    Y = vit_token_labels(vit, vit_block_inputs(vit, x), token_share, labels, partner, r,
                         num_classes)
    return vit_output_label(vit, Y)


# ---- Swin ---------------------------------------------------------------------------------------
def swin_window_attention(swin, x):
    """Each block's post-softmax window attention, (nW * B, heads, N, N) float64, in one no-grad
    forward of the Swin backbone ``swin``; also returns its outputs."""
    attns = []
    hooks = [block.attn.w_msa.softmax.register_forward_hook(
        lambda m, a, out: attns.append(out.detach().double()))
        for stage in swin.stages for block in stage.blocks]
    try:
        with torch.no_grad():
            outs = swin(x)
    finally:
        for h in hooks:
            h.remove()
    return attns, outs


def window_token_coords(Hp, Wp, ws, shift):
    """(num_windows, ws * ws, 2): each token of each window of the map rolled by -shift, as
    (row, col) on the padded, un-rolled map (rolled[y] = map[(y + shift) % n])."""
    coords = [[((wr * ws + i + shift) % Hp, (wc * ws + j + shift) % Wp)
               for i in range(ws) for j in range(ws)]
              for wr in range(Hp // ws) for wc in range(Wp // ws)]
    return torch.tensor(coords)


def swin_block(Y, attn, ws, shift, r=0.5):
    """One block on (B, H, W, K) labels, window by window: padded keys carry no label (attention
    renormalised over the window's real keys), then ``Y <- (1 - r) Y + r A Y``."""
    B, H, W, _ = Y.shape
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    coords = window_token_coords(Hp, Wp, ws, shift)
    nW = len(coords)
    AY = torch.zeros(B, Hp, Wp, Y.shape[-1], dtype=Y.dtype)
    for w, c in enumerate(coords):
        rows, cols = c[:, 0], c[:, 1]
        real = ((rows < H) & (cols < W)).double()                     # (N, )
        keys = Y[:, rows.clamp(max=H - 1), cols.clamp(max=W - 1)] * real[None, :, None]
        A = attn[w::nW].mean(dim=1)                                    # (B, N, N)
        AY[:, rows, cols] = (A @ keys) / (A @ real)[..., None]
    return (1 - r) * Y + r * AY[:, :H, :W]


def swin_merge(Y):
    """2x2 patch merging of (B, H, W, K) labels (bottom/right padding): the mean label of each
    group's real sources."""
    B, H, W, Kc = Y.shape
    Ho, Wo = -(-H // 2), -(-W // 2)
    total = torch.zeros(B, Ho, Wo, Kc, dtype=Y.dtype)
    count = torch.zeros(1, Ho, Wo, 1, dtype=Y.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            part = Y[:, dy::2, dx::2]
            total[:, :part.shape[1], :part.shape[2]] += part
            count[:, :part.shape[1], :part.shape[2]] += 1
    return total / count


def swin_token_labels(swin, attns, token_share, grid, labels, partner, r=0.5, num_classes=K):
    """K-dim TL-Align for Swin (DESIGN.md section 1 "Swin").

    Args:
        swin: the SwinTransformer whose blocks' window sizes, shifts and merges are followed.
        attns (list[Tensor]): each block's window attention, from :func:`swin_window_attention`.
        token_share (Tensor): (B, h0 * w0) the partner's share of each first-stage patch.
        grid (tuple): (h0, w0), the first stage's token grid.

    Returns:
        Tensor: (B, h, w, K) the labels of the last stage's tokens.
    """
    attns = iter(attns)
    Y = mixed_labels(labels, partner, token_share.view(-1, *grid), num_classes)
    for stage in swin.stages:
        for block in stage.blocks:
            ws = block.attn.window_size
            # mmpretrain's ShiftWindowMSA: a map of exactly one window is not shifted unless
            # pad_small_map
            one_window = min(Y.shape[1:3]) == ws and not block.attn.pad_small_map
            Y = swin_block(Y, next(attns), ws, 0 if one_window else block.attn.shift_size, r)
        if stage.downsample is not None:
            Y = swin_merge(Y)
    return Y
