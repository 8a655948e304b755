"""What the aligned backbones share: the ``forward_aligned`` entry point and input checks."""
from ..errors import UserInputError


class ShareTracingMixin:
    """For backbones that implement ``trace_shares(x, token_share)`` (returning a tracer with
    ``.outs``) and ``output_share(tracer)``; mixed in before the mmpretrain parent class."""

    @staticmethod
    def check_residual_weight(residual_weight):
        if not 0 <= residual_weight <= 1:
            raise UserInputError(f'residual_weight must lie in [0, 1], got {residual_weight}.')
        return residual_weight

    def init_weights(self):
        """As the parent's, but a ``Pretrained`` checkpoint that does not fit is refused (as
        ``load_from`` is) instead of leaving the backbone random after a warning."""
        from ..checkpoint.fit import check_pretrained_init
        check_pretrained_init(self)
        super().init_weights()

    @property
    def patch_size(self):
        """(ph, pw) pixels per (first-stage) token."""
        return tuple(self.patch_embed.projection.stride)

    #: None, or a list that receives, from every :meth:`forward_aligned` call while it is set,
    #: what that pass traced: ``dict(blocks=(num_blocks, B) output shares had the network
    #: stopped after each block (:meth:`block_output_shares`), maps=[(B, h_i, w_i)] per-block
    #: token share maps (:meth:`share_maps`))``. :class:`TLAlignClassifier` sets it to log the
    #: label drift per block from the training pass itself (no extra forward).
    trace_sink = None

    def forward_aligned(self, x, token_share, dense=False):
        """Forward and trace the partner share of the output.

        Args:
            x (Tensor): (B, C, H, W) mixed images; H, W multiples of the patch size.
            token_share (Tensor): (B, H/ph * W/pw) partner share of each (first-stage) patch
                token, row-major.
            dense (bool): also return the output tokens and their traced shares (the dense
                token labels of ``TLAlignClassifier(token_loss=...)``), from the same pass.

        Returns:
            tuple: ``outs``, exactly as :meth:`forward` returns them, and the partner share
            (B,) of the output the head consumes (see :meth:`output_share`). With ``dense``
            also the (B, N, C) output tokens (see :meth:`forward_tokens`) and their (B, N)
            traced partner shares (see :meth:`output_token_share`).
        """
        tracer = self.trace_shares(x, token_share, dense=dense)
        if self.trace_sink is not None:
            self.trace_sink.append(dict(blocks=self.block_output_shares(tracer).detach(),
                                        maps=self.share_maps(tracer)))
        if not dense:
            return tracer.outs, self.output_share(tracer)
        return (tracer.outs, self.output_share(tracer), tracer.tokens,
                self.output_token_share(tracer))

    def token_grid(self, x, token_share):
        """Check the inputs of :meth:`forward_aligned`; return the (h, w) token grid."""
        B, _, H, W = x.shape
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise UserInputError(f'Image size {H}x{W} is not divisible by the patch size '
                                 f'{ph}x{pw}; '
                             'resize or crop to a multiple of the patch size.')
        grid = (H // ph, W // pw)
        if tuple(token_share.shape) != (B, grid[0] * grid[1]):
            raise UserInputError(f'token_share must have shape {(B, grid[0] * grid[1])} (batch, '
                             f'tokens of a {grid[0]}x{grid[1]} patch grid), got '
                             f'{tuple(token_share.shape)}.')
        return grid
