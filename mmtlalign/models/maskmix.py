"""MaskMix, the mixer of MixPro (Zhao et al., ICLR 2023): random whole cells of a coarse grid."""
import numpy as np
import torch
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from .mixing import BatchMixer, MixedBatch, cell_grid, mix_by_cell_mask


@MODELS.register_module()
class MaskMix(BatchMixer):
    """MaskMix as released (fistyee/MixPro ``utils.py:27-58``, ``main.py:181-211``).

    The image is cut into a ``g x g`` grid of ``cell_size``-pixel cells (4 x 4 of 56 px at
    224). Per batch: ``r ~ Beta(alpha, alpha)``, ``n = ceil(G r)`` cells of every image stay
    its own (chosen per image, uniformly without replacement), the other ``G - n`` come from
    its partner, a random permutation of the batch (an image may be its own partner, then it
    is unmixed). Own share ``lambda = n / G`` (1/G .. 1), the partner's ``1 - lambda``.

    Random draws, in this order, from the mixer's generator: ``beta(alpha, alpha)``,
    ``permutation(B)`` (partners), ``random((B, G))`` (each image's own cells are the ``n``
    first of its argsort).

    Args:
        alpha (float): Beta(alpha, alpha) of r. 1.0 (uniform) as released.
        cell_size (int, optional): cell side in pixels; must divide the image. None: the
            backbone's patch size (one cell per token). MixPro: 56 at 224.
        seed (int, optional): see :class:`BatchMixer`.
    """

    def __init__(self, alpha=1.0, cell_size=56, seed=None):
        if alpha <= 0:
            raise UserInputError(f'MaskMix alpha must be > 0, got {alpha}.')
        if cell_size is not None and cell_size < 1:
            raise UserInputError(f'MaskMix cell_size must be a positive number of pixels, got '
                                 f'{cell_size}.')
        super().__init__(seed)
        self.alpha = alpha
        self.cell_size = cell_size

    def __call__(self, inputs, patch_size):
        """Mix a batch: (B, C, H, W) images -> :class:`MixedBatch` of kind ``'maskmix'``."""
        grid = self.token_grid(inputs, patch_size)
        gh, gw = cell_grid(inputs, self.cell_size, patch_size, 'MaskMix')
        B, G = inputs.shape[0], gh * gw
        if B < 2:
            return self.unmixed(inputs, grid)
        r = self.rng.beta(self.alpha, self.alpha)
        n = int(np.clip(np.ceil(G * r), 0, G))
        partner = torch.as_tensor(self.rng.permutation(B), device=inputs.device)
        order = self.rng.random((B, G)).argsort(axis=1)
        partner_cells = np.ones((B, G), dtype=np.float32)
        partner_cells[np.arange(B)[:, None], order[:, :n]] = 0  # the n own cells
        cell_mask = torch.as_tensor(partner_cells).view(B, gh, gw)
        mixed, token_share, area_share = mix_by_cell_mask(inputs, partner, cell_mask,
                                                          patch_size)
        return MixedBatch(inputs=mixed, partner=partner, token_share=token_share,
                          area_share=area_share, uniform=n == G, kind='maskmix')

    def __repr__(self):
        return f'MaskMix(alpha={self.alpha}, cell_size={self.cell_size})'
