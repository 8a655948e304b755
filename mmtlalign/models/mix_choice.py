"""One of several mixers per batch: the alternations of the released recipes (MixPro's
MaskMix / Mixup / CutMix, SMMix's and TokenMix's own mask / Mixup)."""
import numpy as np
from mmpretrain.registry import MODELS

from ..errors import UserInputError
from .mixing import BatchMixer


@MODELS.register_module()
class RandomChoiceMix(BatchMixer):
    """Mix each batch with one mixer drawn with ``probs``.

    All mixers draw from this mixer's generator (one random state to seed and to save).

    Args:
        mixers (list[dict | BatchMixer]): e.g. ``[dict(type='MaskMix'), dict(type=
            'TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.8)]``.
        probs (list[float], optional): their probabilities (sum 1); None: equal.
        seed (int, optional): see :class:`BatchMixer`.
    """

    def __init__(self, mixers, probs=None, seed=None):
        super().__init__(seed)
        if not mixers:
            raise UserInputError('RandomChoiceMix needs a non-empty list of mixers.')
        self.mixers = [m if isinstance(m, BatchMixer) else MODELS.build(m) for m in mixers]
        probs = [1 / len(mixers)] * len(mixers) if probs is None else list(probs)
        if len(probs) != len(mixers) or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
            raise UserInputError(f'RandomChoiceMix probs must be {len(mixers)} numbers >= 0 '
                                 f'summing to 1, got {probs}.')
        self.probs = probs
        self.needs_motivation = any(m.needs_motivation for m in self.mixers)

    def check_backbone(self, backbone):
        for m in self.mixers:
            m.check_backbone(backbone)

    def __call__(self, inputs, patch_size, motivate=None):
        """Mix with one of the mixers (draw: ``random()`` against the cumulative probs)."""
        i = int(np.searchsorted(np.cumsum(self.probs), self.rng.random(), side='right'))
        mixer = self.mixers[min(i, len(self.mixers) - 1)]
        mixer._rng = self.rng
        if mixer.needs_motivation:
            return mixer(inputs, patch_size, motivate=motivate)
        return mixer(inputs, patch_size)

    def __repr__(self):
        return f'RandomChoiceMix({self.mixers}, probs={self.probs})'
