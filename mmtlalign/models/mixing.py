"""Batch mixing that keeps what token-label alignment needs."""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_rank
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from .alignment import token_share_from_mask


@dataclass
class MixedBatch:
    """A mixed batch.

    Attributes:
        inputs (Tensor): (B, C, H, W) mixed images.
        partner (Tensor): (B,) index of each image's partner in the batch.
        token_share (Tensor): (B, N) partner share of each patch token, row-major patch grid.
        area_share (Tensor): (B,) partner share of the whole image (1 - lambda).
        uniform (bool): every token has its image's area share (a global Mixup batch, or no
            mix at all); attention cannot change uniform shares, so no tracing is needed.
        mixed (Tensor): (B,) bool, True where the image really received content from another
            image: its partner is not itself and its partner share is > 0 somewhere. Derived
            from ``partner`` and ``token_share`` when not given.
        kind (str, optional): which mask made the batch, for rules that act on one kind only
            (``'maskmix'``, ``'block'``, ``'smmix'``); None for :class:`TLAlignMix` batches.
        aux (dict): what a mixer computed for the losses of its own method (SMMix: the
            ``'motivation_logits'`` (B, K) of its no-grad pass on the unmixed batch).
        pixel_mask (Tensor, optional): (B, H, W) in [0, 1], 1 where the pixel was pasted from
            the partner at the same position (a Mixup blend: the blend weight), as
            :class:`TLAlignMix` mixes; None for mixers that do not keep it. The content share
            (:mod:`mmtlalign.models.labels.content`) reads it.
        fg_mask (Tensor, optional): (B, H, W) bool foreground of the unmixed images; set by
            :class:`TLAlignClassifier` from ``data_sample.fg_mask`` for the rules that need it
            (``ContentLabel``), else None.
    """
    inputs: torch.Tensor
    partner: torch.Tensor
    token_share: torch.Tensor
    area_share: torch.Tensor
    uniform: bool
    mixed: Optional[torch.Tensor] = None
    kind: Optional[str] = None
    aux: dict = field(default_factory=dict)
    pixel_mask: Optional[torch.Tensor] = None
    fg_mask: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.mixed is None:
            self_index = torch.arange(len(self.partner), device=self.partner.device)
            # a token share is the mean of the pixel mask over the patch: > 0 iff some pixel
            # of the patch came from the partner
            self.mixed = (self.partner != self_index) & (self.token_share > 0).any(dim=1)


def flip_partners(batch_size, device=None):
    """(B,) partners of the released pairing: image ``i`` with image ``B - 1 - i``.

    The released code (like timm's ``Mixup``) pastes ``x.flip(0)`` into ``x``. For an odd
    batch the flip would pair the middle image with itself and leave it unmixed; the released
    code never meets one (it asserts an even batch and drops the last incomplete one), so here
    the middle image takes image 0 instead and every image of the batch is mixed, as in an
    even batch. Image 0 then gives content to two images (B - 1 and the middle one).
    """
    partner = torch.arange(batch_size - 1, -1, -1, device=device)
    if batch_size % 2 and batch_size > 1:
        partner[batch_size // 2] = 0
    return partner


class BatchMixer:
    """What every mixer shares: its own random generator, seeded reproducibly per process and
    saved in checkpoints (``state_dict``), so that resumed runs mix as uninterrupted ones.

    A mixer is called as ``mixer(inputs, patch_size) -> MixedBatch``. One that needs the model
    before mixing (SMMix) sets ``needs_motivation`` and also takes ``motivate``: a callable
    ``images -> (logits (B, K), patch scores (B, N))``, the classifier's no-grad pass.

    Args:
        seed (int, optional): seed of the generator. None: drawn from numpy's global generator
            (seeded by mmengine's ``randomness``) plus the process rank.
    """
    needs_motivation = False

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = None

    @property
    def rng(self):
        if self._rng is None:
            seed = self.seed if self.seed is not None else int(np.random.randint(2**31))
            self._rng = np.random.default_rng(seed + get_rank())
        return self._rng

    def state_dict(self):
        return {'bit_generator': self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state['bit_generator']

    def check_backbone(self, backbone):
        """Raise a one-line error (at build time) if the mixer cannot run with ``backbone``."""

    @staticmethod
    def token_grid(inputs, patch_size):
        """(gh, gw) the patch grid of ``inputs``; a one-line error if it does not tile."""
        H, W = inputs.shape[-2:]
        ph, pw = patch_size
        if H % ph or W % pw:
            raise UserInputError(f'Image size {H}x{W} is not divisible by the patch size '
                                 f'{ph}x{pw}: token labels need whole patches. Resize/crop to '
                                 'a multiple of the patch size in the data pipeline.')
        return H // ph, W // pw

    @staticmethod
    def unmixed(inputs, grid):
        """The batch unchanged (a batch of one has nobody to mix with)."""
        B = inputs.shape[0]
        return MixedBatch(inputs=inputs, partner=torch.arange(B, device=inputs.device),
                          token_share=inputs.new_zeros(B, grid[0] * grid[1]),
                          area_share=inputs.new_zeros(B), uniform=True)


@MODELS.register_module()
class TLAlignMix(BatchMixer):
    """CutMix / Mixup for TL-Align.

    Unlike mmpretrain's batch augments, which only return ``(inputs, batch_score)``, this keeps
    the partner index and the per-token partner share, from which the backbone traces labels.

    CutMix boxes are snapped to a grid of ``box_grid`` pixels (the backbone's patch size by
    default), so every token comes from one image, and lambda is corrected to the box area, as
    in the released TL-Align code. With ``box_grid=1`` boxes are pixel-accurate and tokens that
    straddle the box edge get fractional shares (the mean of the mask over the patch), which the
    alignment handles exactly.

    Args:
        cutmix_alpha (float): Beta(alpha, alpha) for CutMix's lambda; 0 disables CutMix.
        mixup_alpha (float): Beta(alpha, alpha) for Mixup's lambda; 0 disables Mixup.
        prob (float): probability of mixing a batch (``mode='batch'``) or an image
            (``mode='elem'``).
        switch_prob (float): probability of Mixup instead of CutMix when both are enabled.
        mode (str): ``'batch'``: one lambda and box for the whole batch (the released code);
            ``'elem'``: one per image.
        pairing (str): which image of the batch each image is mixed with.
            ``'random'``: a random permutation (as mmpretrain's batch augments), which leaves
            about one image per batch paired with itself, i.e. unmixed;
            ``'flip'``: image ``i`` with image ``B - 1 - i`` (the released TL-Align code and
            timm's ``Mixup``, which DeiT uses), never with itself (see :func:`flip_partners`).
        box_grid (int, optional): CutMix box grid in pixels. None: the backbone's patch size.
        seed (int, optional): seed of the mixer's own generator. None: drawn from numpy's
            global generator (seeded by mmengine's ``randomness``) plus the process rank, so
            that processes mix differently but reproducibly.
    """
    MODES = ('batch', 'elem')
    PAIRINGS = ('random', 'flip')

    def __init__(self,
                 cutmix_alpha=1.0,
                 mixup_alpha=0.0,
                 prob=1.0,
                 switch_prob=0.5,
                 mode='batch',
                 box_grid=None,
                 seed=None,
                 pairing='random'):
        if mode not in self.MODES:
            raise UserInputError(f'Unknown TLAlignMix mode {mode!r}: choose one of {self.MODES} '
                             "('batch': one box/lambda per batch, 'elem': one per image).")
        if pairing not in self.PAIRINGS:
            raise UserInputError(f'Unknown TLAlignMix pairing {pairing!r}: choose one of '
                                 f"{self.PAIRINGS} ('random': a random permutation, 'flip': "
                                 'image i with image B-1-i as in the released code).')
        if cutmix_alpha < 0 or mixup_alpha < 0:
            raise UserInputError('cutmix_alpha and mixup_alpha must be >= 0.')
        if cutmix_alpha == 0 and mixup_alpha == 0:
            raise UserInputError('TLAlignMix needs cutmix_alpha > 0 or mixup_alpha > 0; to train '
                             'without mixing use mmpretrain\'s ImageClassifier instead.')
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise UserInputError('prob and switch_prob must lie in [0, 1].')
        if box_grid is not None and box_grid < 1:
            raise UserInputError(f'box_grid must be a positive number of pixels, got {box_grid}.')
        self.cutmix_alpha = cutmix_alpha
        self.mixup_alpha = mixup_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.box_grid = box_grid
        super().__init__(seed)
        self.pairing = pairing

    # -- mixing --
    def __call__(self, inputs, patch_size):
        """Mix a batch.

        Args:
            inputs (Tensor): (B, C, H, W) images.
            patch_size (tuple[int, int]): the backbone's patch size; H and W must be multiples.

        Returns:
            MixedBatch
        """
        B, _, H, W = inputs.shape
        ph, pw = patch_size
        if H % ph or W % pw:
            raise UserInputError(f'Image size {H}x{W} is not divisible by the patch size '
                                 f'{ph}x{pw}: '
                             'token labels need whole patches. Resize/crop to a multiple of the '
                             'patch size in the data pipeline.')
        grid = (H // ph, W // pw)
        n = B if self.mode == 'elem' else 1
        mixed = self.rng.random(n) < self.prob
        if B < 2 or not mixed.any():  # nothing to mix with
            return self._unmixed(inputs, grid)

        use_mixup = self._choose_mixup(n)
        lam = np.where(use_mixup, self._beta(self.mixup_alpha, n), self._beta(self.cutmix_alpha, n))
        lam = np.where(mixed, lam, 1.0)
        box = self._box_mask(lam, use_mixup | ~mixed, H, W, patch_size)
        partner = self._partners(B, inputs.device)

        # pixel mask: 1 where the pixel comes from the partner; for Mixup the blend weight
        blend = torch.as_tensor(np.where(use_mixup, 1 - lam, 0.0), dtype=inputs.dtype,
                                device=inputs.device)
        box = box.to(device=inputs.device, dtype=inputs.dtype)
        mask = torch.maximum(box, blend[:, None, None]).expand(B, H, W)
        mixed_inputs = torch.lerp(inputs, inputs[partner], mask[:, None])
        token_share = token_share_from_mask(mask, grid)
        return MixedBatch(
            inputs=mixed_inputs,
            partner=partner,
            token_share=token_share,
            area_share=mask.mean(dim=(1, 2)),
            uniform=bool((use_mixup | ~mixed).all()),
            pixel_mask=mask)

    def _unmixed(self, inputs, grid):
        B, _, H, W = inputs.shape
        return MixedBatch(
            inputs=inputs,
            partner=torch.arange(B, device=inputs.device),
            token_share=inputs.new_zeros(B, grid[0] * grid[1]),
            area_share=inputs.new_zeros(B),
            uniform=True,
            pixel_mask=inputs.new_zeros(1, H, W).expand(B, H, W))

    def _partners(self, B, device):
        """(B,) index of the image each image takes content from."""
        if self.pairing == 'flip':
            return flip_partners(B, device)
        return torch.as_tensor(self.rng.permutation(B), device=device)

    def _choose_mixup(self, n):
        if self.cutmix_alpha == 0:
            return np.ones(n, dtype=bool)
        if self.mixup_alpha == 0:
            return np.zeros(n, dtype=bool)
        return self.rng.random(n) < self.switch_prob

    def _beta(self, alpha, n):
        return self.rng.beta(alpha, alpha, n) if alpha > 0 else np.ones(n)

    def _box_mask(self, lam, skip, H, W, patch_size):
        """(B or 1, H, W) bool CutMix boxes on the box grid; empty where ``skip``."""
        cell = self.box_grid or patch_size[0]
        cell_w = self.box_grid or patch_size[1]
        if H % cell or W % cell_w:
            raise UserInputError(f'box_grid {cell} does not divide the image size {H}x{W}.')
        gh, gw = H // cell, W // cell_w
        ratio = np.sqrt(1 - lam)
        cut_h, cut_w = (gh * ratio).astype(int), (gw * ratio).astype(int)
        cy, cx = self.rng.integers(0, gh, len(lam)), self.rng.integers(0, gw, len(lam))
        y1, y2 = np.clip(cy - cut_h // 2, 0, gh), np.clip(cy + cut_h // 2, 0, gh)
        x1, x2 = np.clip(cx - cut_w // 2, 0, gw), np.clip(cx + cut_w // 2, 0, gw)
        y2, x2 = np.where(skip, y1, y2), np.where(skip, x1, x2)
        rows = torch.arange(H)[None, :, None] // cell
        cols = torch.arange(W)[None, None, :] // cell_w

        def t(a):
            return torch.as_tensor(a)[:, None, None]

        return (rows >= t(y1)) & (rows < t(y2)) & (cols >= t(x1)) & (cols < t(x2))


def mix_by_cell_mask(inputs, partner, cell_mask, patch_size):
    """Mix a batch with a 0/1 mask of whole cells and keep each token's partner share.

    Args:
        inputs (Tensor): (B, C, H, W) images.
        partner (Tensor): (B,) index of each image's partner.
        cell_mask (Tensor): (B or 1, gh, gw), 1 where the cell comes from the partner; the
            cells tile the image (H / gh pixels high).
        patch_size (tuple[int, int]): the backbone's patch size (the token grid).

    Returns:
        tuple: (B, C, H, W) mixed images, (B, N) token shares (fractional where a token
        straddles cells), (B,) partner share of the image area.
    """
    B, _, H, W = inputs.shape
    gh, gw = cell_mask.shape[-2:]
    mask = cell_mask.to(device=inputs.device, dtype=inputs.dtype)
    mask = mask.repeat_interleave(H // gh, dim=-2).repeat_interleave(W // gw, dim=-1)
    mask = mask.expand(B, H, W)
    mixed = torch.lerp(inputs, inputs[partner], mask[:, None])
    grid = (H // patch_size[0], W // patch_size[1])
    return mixed, token_share_from_mask(mask, grid), mask.mean(dim=(1, 2))


def cell_grid(inputs, cell_size, patch_size, name):
    """(gh, gw) cells of ``cell_size`` pixels (None: the patch size) tiling ``inputs``."""
    H, W = inputs.shape[-2:]
    ch, cw = (cell_size, cell_size) if cell_size else tuple(patch_size)
    if H % ch or W % cw:
        raise UserInputError(f'{name}: cell size {ch}x{cw} px does not divide the image size '
                             f'{H}x{W}; choose a cell size that divides it (and is a multiple '
                             'of the patch size, so that every token comes from one image).')
    return H // ch, W // cw
