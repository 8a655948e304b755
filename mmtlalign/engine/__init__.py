"""Reliability for long runs: exact resume, atomic checkpoints, non-finite loss, bad data.

Importing registers, in mmengine's root registries (so every scope finds them):
hooks ``ExactResumeHook``, ``ResumeCheckHook``, ``AtomicCheckpointHook``, ``NonFiniteLossHook``,
``DataCheckHook``, ``ShareMapHook`` (opt-in: the mixed images' share maps to the visualizer);
the transform ``CheckedLoadImageFromFile``; the file backend ``atomic_local``.
"""
from .checkpoint import AtomicCheckpointHook, AtomicLocalBackend, atomic_write
from .compile import CompileRunner, compile_model  # runner for `compile=True`
from .data_checks import CheckedLoadImageFromFile, DataCheckHook, DataError
from .downstream_checks import DownstreamChecksHook
from .nonfinite import NonFiniteLossError, NonFiniteLossHook
from .preemption import PreemptionHook  # noqa: F401  (SIGUSR1/SIGTERM: save, requeue)
from .resume import ExactResumeHook
from .resume_check import ResumeCheckHook, ResumeStateError
from .share_maps import ShareMapHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'atomic_write', 'CheckedLoadImageFromFile',
    'DataCheckHook', 'DataError', 'ExactResumeHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'CompileRunner', 'compile_model', 'DownstreamChecksHook', 'ShareMapHook', 'ResumeCheckHook',
    'ResumeStateError'
]
