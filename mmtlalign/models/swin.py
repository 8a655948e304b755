"""Swin Transformer backbone with TL-Align label tracing.

The share of the partner image lives on the token grid of each stage, a (B, H, W) map. Each
Swin block moves it exactly as the block moves its features through window attention:

1. pad the map to a multiple of the window size (bottom/right, as ``ShiftWindowMSA`` does),
2. roll it by the block's effective shift,
3. partition it into windows and apply the head-mean post-softmax window attention (relative
   position bias and shift mask included, before attention dropout, no gradient),
4. reverse the partition and the roll, crop the padding,
5. ``s <- (1 - r) * s + r * (A_mean @ s)``.

Patch merging gives each merged token the mean share of its 2x2 sources, and global average
pooling the mean share of the last stage.

**Padding.** Swin pads its feature map with zero features so that windows tile it; those
padded tokens are keys of real queries, but they are not image content and carry no label.
We renormalise each real query's attention over the real keys of its window
(:func:`alignment.attend_share_masked`) and average merged shares over real sources only
(:func:`alignment.merge_share_2x2`), so padding neither dilutes nor creates label mass: a
uniform share map stays uniform. Without padding both reduce to the plain rule.

The attention is observed with forward hooks on the parent's own modules while the parent's
own ``forward`` runs, so the features are exactly those of :meth:`forward`.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from mmpretrain.models import SwinTransformer
from mmpretrain.registry import MODELS

from . import alignment
from .tracing import ShareTracingMixin


def effective_shift(msa, hw_shape):
    """The shift ``ShiftWindowMSA.forward`` applies on a (H, W) map (it drops the shift when
    the map is exactly one window and ``pad_small_map`` is off)."""
    if min(hw_shape) == msa.window_size and not msa.pad_small_map:
        return 0
    return msa.shift_size


def window_partition(share, window_size):
    """(B, Hp, Wp) -> (B * num_windows, ws * ws), windows row-major, batch-major."""
    B, H, W = share.shape
    ws = window_size
    share = share.view(B, H // ws, ws, W // ws, ws).permute(0, 1, 3, 2, 4)
    return share.reshape(-1, ws * ws)


def window_reverse(windows, B, H, W, window_size):
    """(B * num_windows, ws * ws) -> (B, Hp, Wp); inverse of :func:`window_partition`."""
    ws = window_size
    share = windows.view(B, H // ws, W // ws, ws, ws).permute(0, 1, 3, 2, 4)
    return share.reshape(B, H, W)


def window_attend(share, attn, window_size, shift):
    """``A_mean @ s`` through one (shifted) window attention.

    Args:
        share (Tensor): (B, H, W) shares on the block's token grid.
        attn (Tensor): (B * num_windows, heads, ws * ws, ws * ws) post-softmax window attention
            on the padded, rolled map, as ``WindowMSA`` computes it.
        window_size (int): ws.
        shift (int): the block's effective cyclic shift.

    Returns:
        Tensor: (B, H, W) float32, also under fp16/bf16 autocast. Padded positions carry no
        share and do not dilute real keys.
    """
    share = share.float()
    B, H, W = share.shape
    pad = (0, (-W) % window_size, 0, (-H) % window_size)
    padded = F.pad(share, pad)
    Hp, Wp = padded.shape[-2:]
    if shift:
        padded = torch.roll(padded, (-shift, -shift), dims=(1, 2))
    windows = window_partition(padded, window_size)
    # under autocast attn is half precision; the attend functions cast it to float32 with
    # autocast off, so the share stays float32 (einsum would otherwise run in half)
    attn = attn.detach()
    if any(pad):
        valid = F.pad(share.new_ones(1, H, W), pad)
        if shift:
            valid = torch.roll(valid, (-shift, -shift), dims=(1, 2))
        valid = window_partition(valid.expand(B, Hp, Wp), window_size)
        attended = alignment.attend_share_masked(attn, windows, valid)
    else:
        attended = alignment.attend_share(attn, windows)
    attended = window_reverse(attended, B, Hp, Wp, window_size)
    if shift:
        attended = torch.roll(attended, (shift, shift), dims=(1, 2))
    return attended[:, :H, :W]


class SwinShareTracer:
    """Carries the (B, H, W) share map through one forward pass, driven by module hooks.

    Attributes:
        share (Tensor): (B, H, W) the current share map.
        history (list[Tensor]): (B, H * W) shares after each block, row-major on that block's
            grid.
        grids (list[tuple[int, int]]): (H, W) of each block.
        stage_shares (list[Tensor]): (B, H, W) share map of each stage's output, as the stage
            returns it (after its patch merging when ``out_after_downsample``).
        outs (tuple[Tensor]): the backbone's outputs, exactly those of ``forward``.
    """

    def __init__(self, share, residual_weight):
        self.share = share
        self.residual_weight = residual_weight
        self.history, self.grids, self.stage_shares = [], [], []
        self.outs = None
        self._attn = None

    def capture(self, softmax, args, attn):
        """Forward hook of ``WindowMSA.softmax``: keep the block's attention."""
        self._attn = attn

    def block(self, msa, args, out):
        """Forward hook of ``ShiftWindowMSA``: apply the rule with the captured attention."""
        attn, self._attn = self._attn, None
        B, H, W = self.share.shape
        if attn is None or args[0].shape[1] != H * W:
            raise RuntimeError('share tracing lost step with the Swin blocks (the backbone was '
                               'modified or called re-entrantly during forward_aligned).')
        attended = window_attend(self.share, attn, msa.window_size,
                                 effective_shift(msa, (H, W)))
        self.share = alignment.propagate(self.share, attended, self.residual_weight)
        self.history.append(self.share.flatten(1))
        self.grids.append((H, W))

    def merge(self, merging, args, out):
        """Forward hook of ``PatchMerging``: mean share of each 2x2 group."""
        self.share = alignment.merge_share_2x2(self.share)

    def stage_end(self, stage, args, out):
        """Forward hook of ``SwinBlockSequence``."""
        self.stage_shares.append(self.share)


@MODELS.register_module()
class AlignedSwinTransformer(ShareTracingMixin, SwinTransformer):
    """mmpretrain's :class:`SwinTransformer` plus training-time token-label alignment.

    Same constructor, ``state_dict`` keys, checkpoint conversion and ``forward`` as the parent
    (inference is unchanged); checkpoints move freely between the two. It adds
    :meth:`forward_aligned` and the tracing helpers used by the analysis tools. See the module
    docstring for the rule, and for padding: padded positions carry no share and do not dilute
    the real tokens.

    Args:
        residual_weight (float): r of the alignment rule. Defaults to 0.5 (the paper).
        *args: those of :class:`mmpretrain.models.SwinTransformer`.
        **kwargs: those of :class:`mmpretrain.models.SwinTransformer`.
    """

    def __init__(self, *args, residual_weight=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.residual_weight = self.check_residual_weight(residual_weight)
        for i, stage in enumerate(self.stages):
            self._check_stage(i, stage)

    @staticmethod
    def _check_stage(i, stage):
        for j, block in enumerate(stage.blocks):
            if not isinstance(getattr(block.attn.w_msa, 'softmax', None), torch.nn.Softmax):
                raise ValueError(f'stage {i} block {j}: its window attention has no `softmax` '
                                 'module, so TL-Align cannot observe the attention.')
        merge = stage.downsample
        if merge is not None and not (
                merge.sampler.kernel_size == merge.sampler.stride == (2, 2)
                and merge.sampler.dilation == (1, 1) and merge.sampler.padding == (0, 0)
                and merge.adaptive_padding is not None):
            raise ValueError(f'stage {i}: TL-Align supports the standard 2x2 patch merging '
                             '(kernel_size=2, stride=2, padding="corner"), not the '
                             'downsample_cfg given in stage_cfgs.')

    def trace_shares(self, x, token_share, dense=False):
        """Run :meth:`forward` with a :class:`SwinShareTracer`: ``tracer.outs`` the outputs,
        ``tracer.history`` (B, H_i * W_i) shares after each block, ``tracer.grids`` their
        (H_i, W_i); with ``dense`` also ``tracer.tokens``, the (B, N, C) output tokens of
        :meth:`forward_tokens`."""
        grid = self.token_grid(x, token_share)
        tracer = SwinShareTracer(token_share.float().reshape(-1, *grid), self.residual_weight)
        with self._hooked(tracer):
            tracer.outs = self.forward(x)
        if dense:
            tracer.tokens = self._output_tokens(tracer.outs)
        return tracer

    # -- per-token output, for dense token labels (TLAlignClassifier(token_loss=...)) --
    @property
    def token_channels(self):
        """C of the (B, N, C) tokens of :meth:`forward_tokens`."""
        return self.num_features[max(self.out_indices)]

    def check_token_output(self):
        """Every Swin output is a token map: nothing to refuse."""

    def forward_tokens(self, x):
        """:meth:`forward` and the (B, N, C) tokens of the output the head consumes.

        Returns:
            tuple: ``outs``, exactly as :meth:`forward` returns them, and the tokens of the
            last of ``out_indices`` (after its norm), row-major on that stage's grid: the
            (B, C, h, w) map the neck pools, as a sequence (no copy of the features).
        """
        outs = self.forward(x)
        return outs, self._output_tokens(outs)

    @staticmethod
    def _output_tokens(outs):
        # outs come in stage order, so the last is the last of out_indices
        return outs[-1].flatten(2).transpose(1, 2)

    def output_token_share(self, tracer):
        """(B, N) traced partner share of each token of the output the head consumes, in the
        order of :meth:`forward_tokens`."""
        return tracer.stage_shares[max(self.out_indices)].flatten(1)

    def origin_token_share(self, token_share, grid):
        """(B, N) the starting partner share of each output token (the MixToken label): the
        mean input-patch share of the region it merges, i.e. the trace with ``r = 0``.

        Args:
            token_share (Tensor): (B, h0 * w0) shares of the first-stage patches.
            grid (tuple[int, int]): (h0, w0).
        """
        share = token_share.float().reshape(-1, *grid)
        last = max(self.out_indices)
        for i, stage in enumerate(self.stages[:last + 1]):
            # a stage's own merging precedes its output only with out_after_downsample
            if stage.downsample is not None and (i < last or self.out_after_downsample):
                share = alignment.merge_share_2x2(share)
        return share.flatten(1)

    def output_share(self, tracer):
        """(B,) share of the output the head consumes (the last of ``out_indices``), pooled."""
        return tracer.stage_shares[max(self.out_indices)].flatten(1).mean(dim=1)

    def block_output_shares(self, tracer):
        """(num_blocks, B): the pooled output share had the network stopped after each block."""
        return torch.stack([share.mean(dim=1) for share in tracer.history])

    def share_maps(self, tracer):
        """Per-block shares as (B, H_i, W_i) maps on each stage's token grid."""
        return [share.view(-1, *grid) for share, grid in zip(tracer.history, tracer.grids)]

    @contextmanager
    def _hooked(self, tracer):
        # Hooks only observe: the parent's forward runs unchanged. They are removed before
        # backward, so gradient checkpointing's recomputation (with_cp) cannot replay them.
        handles = []
        for stage in self.stages:
            for block in stage.blocks:
                handles.append(block.attn.w_msa.softmax.register_forward_hook(tracer.capture))
                handles.append(block.attn.register_forward_hook(tracer.block))
            if stage.downsample is not None:
                handles.append(stage.downsample.register_forward_hook(tracer.merge))
            handles.append(stage.register_forward_hook(tracer.stage_end))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        """Load checkpoints, with the parent's legacy key conversion.

        The parent converts old checkpoints (version < 3) only when its class is exactly
        :class:`SwinTransformer`; the same conversion is applied here.
        """
        version = local_metadata.get('version', None)
        if version is None or version < 2:
            final = f'norm{len(self.stages) - 1}.'
            for k in list(state_dict.keys()):
                if k.startswith('norm.') or k.startswith('backbone.norm.'):
                    state_dict[k.replace('norm.', final)] = state_dict.pop(k)
        if version is None or version < 3:
            for k in [k for k in state_dict if 'attn_mask' in k]:
                del state_dict[k]
        # the parent's own conversion is skipped for subclasses; go to BaseModule's loader
        super(SwinTransformer, self)._load_from_state_dict(state_dict, prefix, local_metadata,
                                                           *args, **kwargs)
