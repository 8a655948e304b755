"""TokenMix's block mask (Liu et al., ECCV 2022): one BEiT-style block mask per batch."""
import math

import numpy as np
import torch
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from .mixing import BatchMixer, MixedBatch, cell_grid, flip_partners, mix_by_cell_mask


def block_mask(rng, grid, num_target, max_tries=10, aspect_ratio=(0.3, 1 / 0.3)):
    """BEiT's block masking as TokenMix calls it (Sense-X/TokenMix ``tokenmix.py:166-209``).

    Rectangles are added until ``num_target`` cells are masked: each try draws an area
    ``U(1, remaining)``, a log-uniform aspect ratio, ``h = round(sqrt(area * ar))``,
    ``w = round(sqrt(area / ar))`` (both < the grid side) and a uniform position; it is kept
    if it adds 1 .. remaining new cells. Stops early when ``max_tries`` tries add nothing (then
    fewer cells are masked).

    Args:
        rng (numpy.random.Generator): draws, in this order per try: ``uniform(1, remaining)``,
            ``uniform(log ar_min, log ar_max)``, then if the block fits
            ``integers(0, gh - h + 1)``, ``integers(0, gw - w + 1)``.
        grid (tuple[int, int]): (gh, gw).
        num_target (int): cells to mask.

    Returns:
        numpy.ndarray: (gh, gw) bool mask.
    """
    gh, gw = grid
    mask = np.zeros(grid, dtype=bool)
    log_ar = (math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
    count = 0
    while count < num_target:
        remaining, added = num_target - count, 0
        for _ in range(max_tries):
            area = rng.uniform(1, remaining)
            ar = math.exp(rng.uniform(*log_ar))
            h, w = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if h < gh and w < gw:
                top, left = int(rng.integers(0, gh - h + 1)), int(rng.integers(0, gw - w + 1))
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= remaining:
                    mask[top:top + h, left:left + w] = True
                    added = new
            if added:
                break
        if not added:
            break
        count += added
    return mask


@MODELS.register_module()
class BlockMaskMix(BatchMixer):
    """TokenMix's mixer without its teacher: one block mask for the whole batch.

    On a ``gh x gw`` grid of ``cell_size``-pixel cells (14 x 14 of 16 px at 224) a block mask
    (:func:`block_mask`) of ``min(N, int(mask_ratio * N) + min_tokens)`` cells (112 of 196 as
    released: its Beta draw is discarded, the ratio is fixed at 0.5) marks where **every**
    image takes its partner's content; partner: image ``B - 1 - i`` (``x.flip(0)``). Partner
    share = masked cells / N (the cells actually placed).

    Args:
        mask_ratio (float): 0.5 as released.
        min_tokens (int): cells added to ``mask_ratio * N``: 14 at 14 x 14 as released
            (scale it with the grid: 1 on a 4 x 4 grid).
        cell_size (int, optional): cell side in pixels; None: the backbone's patch size.
        max_tries (int): tries per block (10, BEiT's).
        seed (int, optional): see :class:`BatchMixer`.
    """

    def __init__(self, mask_ratio=0.5, min_tokens=14, cell_size=None, max_tries=10, seed=None):
        if not 0 <= mask_ratio <= 1 or min_tokens < 0 or max_tries < 1:
            raise UserInputError(f'BlockMaskMix needs 0 <= mask_ratio <= 1, min_tokens >= 0 and '
                                 f'max_tries >= 1, got {mask_ratio}, {min_tokens}, '
                                 f'{max_tries}.')
        super().__init__(seed)
        self.mask_ratio = mask_ratio
        self.min_tokens = min_tokens
        self.cell_size = cell_size
        self.max_tries = max_tries

    def __call__(self, inputs, patch_size):
        """Mix a batch: (B, C, H, W) images -> :class:`MixedBatch` of kind ``'block'``."""
        grid = self.token_grid(inputs, patch_size)
        cells = cell_grid(inputs, self.cell_size, patch_size, 'BlockMaskMix')
        B, N = inputs.shape[0], cells[0] * cells[1]
        if B < 2:
            return self.unmixed(inputs, grid)
        target = min(N, int(self.mask_ratio * N) + self.min_tokens)
        mask = block_mask(self.rng, cells, target, self.max_tries)
        partner = flip_partners(B, inputs.device)
        cell_mask = torch.as_tensor(mask, dtype=torch.float32)[None]
        mixed, token_share, area_share = mix_by_cell_mask(inputs, partner, cell_mask,
                                                          patch_size)
        return MixedBatch(inputs=mixed, partner=partner, token_share=token_share,
                          area_share=area_share, uniform=not mask.any(), kind='block')

    def __repr__(self):
        return (f'BlockMaskMix(mask_ratio={self.mask_ratio}, min_tokens={self.min_tokens}, '
                f'cell_size={self.cell_size})')
