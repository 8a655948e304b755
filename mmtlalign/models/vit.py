"""ViT / DeiT backbone with TL-Align label tracing."""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from . import alignment
from .dynamo import python_drop_probs
from .tracing import ShareTracingMixin


class ShareTracer:
    """Carries the partner share of every token through the blocks of one forward pass.

    Installed as the attention function of each block for the duration of one
    :meth:`AlignedVisionTransformer.forward_aligned` call: it computes the block's fused
    attention and, from the same call, applies the TL-Align rule to the shares.

    Args:
        share (Tensor): (B, N_tokens) initial shares (class token first).
        residual_weight (float): r in ``s <- (1 - r) * s + r * (A_mean @ s)``.
    """

    def __init__(self, share, residual_weight):
        self.share = share
        self.residual_weight = residual_weight
        self.history = []  # (B, N_tokens) after each block
        self.outs = None  # the backbone's outputs, set by trace_shares

    def attention(self, q, k, v, dropout_p=0.):
        out, attended = alignment.attention_with_share(q, k, v, self.share, dropout_p)
        self.share = alignment.propagate(self.share, attended, self.residual_weight)
        self.history.append(self.share)
        return out


@MODELS.register_module()
class AlignedVisionTransformer(ShareTracingMixin, VisionTransformer):
    """mmpretrain's :class:`VisionTransformer` plus training-time token-label alignment.

    Same constructor, ``state_dict`` keys and ``forward`` as the parent (inference is
    unchanged); checkpoints move freely between the two. It adds :meth:`forward_aligned`.

    Args:
        residual_weight (float): r of the alignment rule. Defaults to 0.5 (the paper).
        *args: those of :class:`mmpretrain.models.VisionTransformer`.
        **kwargs: those of :class:`mmpretrain.models.VisionTransformer`.
    """

    def __init__(self, *args, residual_weight=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.residual_weight = self.check_residual_weight(residual_weight)
        self._token_probe = None  # set only inside forward_tokens
        check_fused_attention(self)
        python_drop_probs(self)  # torch.compile: one graph for all blocks (see dynamo.py)

    def trace_shares(self, x, token_share, dense=False):
        """Run :meth:`forward` with a :class:`ShareTracer`; ``tracer.history`` holds the
        (B, N_tokens) shares after every block and ``tracer.outs`` the outputs. With
        ``dense``, ``tracer.tokens`` the (B, N, C) output tokens of :meth:`forward_tokens`,
        from the same pass."""
        grid = self.token_grid(x, token_share)
        share = alignment.initial_share(token_share.float(), self.num_extra_tokens)
        tracer = ShareTracer(share, self.residual_weight)
        tracer.grid = grid
        with self._attention_replaced_by(tracer):
            if dense:
                tracer.outs, tracer.tokens = self.forward_tokens(x)
            else:
                tracer.outs = self.forward(x)
        return tracer

    # -- per-token output, for dense token labels (TLAlignClassifier(token_loss=...)) --
    @property
    def token_channels(self):
        """C of the (B, N, C) tokens of :meth:`forward_tokens`."""
        return self.embed_dims

    def check_token_output(self):
        """Raise :class:`UserInputError` unless :meth:`forward_tokens` applies."""
        if self.out_type not in ('cls_token', 'avg_featmap'):
            raise UserInputError(f'token labels need a classification output (out_type '
                                 f"'cls_token' or 'avg_featmap'), not {self.out_type!r}.")

    def forward_tokens(self, x):
        """:meth:`forward` that also returns the patch tokens of the output the head consumes.

        Args:
            x (Tensor): (B, C_in, H, W) images.

        Returns:
            tuple: ``outs``, exactly as :meth:`forward` returns them, and (B, N, C) the N
            patch tokens of the last of ``out_indices`` (after the final norm ``ln1``; for
            ``out_type='avg_featmap'`` also through ``ln2``, as the pooled token is).
        """
        probe = _TokenProbe(self)
        # the parent's forward runs unchanged; the output formatting also hands the tokens to
        # the probe while it is set (set and reset, not deleted: torch.compile traces this)
        self._token_probe = probe
        try:
            outs = self.forward(x)
        finally:
            self._token_probe = None
        return outs, probe.tokens

    def _format_output(self, x, hw):
        """The parent's, plus: hand ``x`` to the token probe of :meth:`forward_tokens`."""
        if self._token_probe is not None:
            self._token_probe.keep(x)
        return super()._format_output(x, hw)

    def output_token_share(self, tracer):
        """(B, N) traced partner share of each patch token of the output the head consumes,
        in the order of :meth:`forward_tokens`."""
        return tracer.history[max(self.out_indices)][:, self.num_extra_tokens:]

    def origin_token_share(self, token_share, grid=None):
        """(B, N) the starting partner share of each output token (the MixToken label): for
        a ViT the input patch shares themselves (``grid``, the patch grid, is not needed)."""
        return token_share.float()

    def output_share(self, tracer):
        """(B,) share of the output the head consumes (the last of ``out_indices``): the class
        token's for ``out_type='cls_token'``, the mean over patch tokens for ``'avg_featmap'``."""
        return self._pooled_share(tracer.history[max(self.out_indices)])

    def block_output_shares(self, tracer):
        """(num_blocks, B): the output share had the network stopped after each block."""
        return torch.stack([self._pooled_share(share) for share in tracer.history])

    def share_maps(self, tracer):
        """Per-block patch-token shares as (B, h, w) maps on the patch grid."""
        h, w = tracer.grid
        return [share[:, self.num_extra_tokens:].reshape(-1, h, w) for share in tracer.history]

    def _pooled_share(self, share):
        if self.out_type == 'cls_token':
            return share[:, 0]
        if self.out_type == 'avg_featmap':
            return share[:, self.num_extra_tokens:].mean(dim=1)
        raise ValueError(f'forward_aligned needs a classification output (out_type '
                         f"'cls_token' or 'avg_featmap'), not {self.out_type!r}.")

    def _attention_replaced_by(self, tracer):
        return attention_replaced(self.layers, tracer.attention)


class _TokenProbe:
    """Keeps the patch tokens of the output that ``_format_output`` formats (the last call's:
    the last of ``out_indices``)."""

    def __init__(self, vit):
        self.vit = vit
        self.tokens = None  # (B, N, C)

    def keep(self, x):
        """x: (B, N_tokens, C) the block output, after the final norm if it is the last."""
        vit = self.vit
        tokens = x[:, vit.num_extra_tokens:]
        if vit.out_type == 'avg_featmap':
            tokens = vit.ln2(tokens)  # the norm the pooled token goes through
        self.tokens = tokens


@contextmanager
def attention_replaced(layers, attention):
    """Make ``attention(q, k, v, dropout_p)`` the fused attention call of the given ViT blocks.

    The parent's own forward runs unchanged; only the blocks' attention call also carries the
    shares, so the features are those of ``forward()`` by construction.

    Args:
        layers (Iterable[TransformerEncoderLayer]): blocks of an mmpretrain ViT.
        attention (callable): a drop-in for ``F.scaled_dot_product_attention`` (same outputs).
    """
    attns = [layer.attn for layer in layers]
    for attn in attns:
        attn.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        for attn in attns:
            attn.scaled_dot_product_attention = F.scaled_dot_product_attention


def check_fused_attention(vit):
    """Raise unless every block of ``vit`` calls torch's ``scaled_dot_product_attention``,
    the call the share tracing rides along with."""
    for i, layer in enumerate(vit.layers):
        if layer.attn.scaled_dot_product_attention is not F.scaled_dot_product_attention:
            raise UserInputError(
                f'layer {i} does not use torch\'s scaled_dot_product_attention (was '
                '`qk_scale` set in layer_cfgs?). mmpretrain\'s python fallback scales by '
                'the inverse factor; leave qk_scale unset.')
