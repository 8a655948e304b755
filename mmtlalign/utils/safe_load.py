"""Resume mmengine checkpoints under torch >= 2.6's ``weights_only=True`` default.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; checkpoints it writes hold a few
non-tensor types (the message hub's ``HistoryBuffer`` and the numpy arrays/scalars inside it).
We allow-list exactly those types instead of switching the safety off.
"""
import numpy as np
import torch


def _numpy_types():
    # numpy arrays and scalars pickle through these reconstructors and dtype classes.
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    types = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    types += [type(np.dtype(name)) for name in
              ('float64', 'float32', 'float16', 'int64', 'int32', 'int8', 'uint8', 'bool')]
    return types


def mmengine_checkpoint_types():
    """The non-tensor globals found in checkpoints that mmengine's Runner saves.

    ``getattr`` is there because a pickled ``HistoryBuffer`` refers to its statistics methods
    as ``getattr(HistoryBuffer, 'min')``; the weights-only unpickler still refuses to *call*
    anything that is not allow-listed, so this only fetches attributes of allowed classes.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, getattr] + _numpy_types()


def allow_mmengine_checkpoint_types():
    """Allow-list :func:`mmengine_checkpoint_types` for ``torch.load(weights_only=True)``."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_checkpoint_types())
