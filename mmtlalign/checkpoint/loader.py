"""Loading checkpoints a user may have downloaded: weights only, nothing callable.

torch >= 2.6 loads with ``weights_only=True``: its unpickler builds tensors and plain containers
and refuses any other global. mmengine 0.10.7 checkpoints hold a few more objects -- the
message hub's :class:`~mmengine.logging.HistoryBuffer` and the numpy arrays, scalars and dtypes
inside it -- so resuming needs those allowed, and nothing more. What we allow, and why it
cannot run code:

* ``HistoryBuffer`` is allowed under its own name but built as :class:`_CheckedHistoryBuffer`,
  whose ``__setstate__`` accepts only the buffer's own fields with their own types (so BUILD
  cannot plant a ``__setstate__`` or other attribute, nor register foreign "statistics" in the
  class-wide table that mmengine's ``__setstate__`` updates) and then turns the instance back
  into a plain ``HistoryBuffer``.
* ``builtins.getattr`` appears in these files because pickle protocol 2 stores the buffer's
  statistics methods as ``getattr(HistoryBuffer, 'min')``. It is *never* allowed itself (with
  it a pickle reaches ``eval`` through ``getattr(getattr, '__self__')``); its name maps to
  :func:`_history_buffer_statistic`, which returns only the registered public statistics
  methods of ``HistoryBuffer`` and refuses everything else.
* numpy: ``_reconstruct`` / ``scalar`` (array and scalar reconstructors), ``ndarray``,
  ``dtype`` and the numeric dtype classes -- under both numpy 1 (``numpy.core``) and numpy 2
  (``numpy._core``) module names. Object arrays cannot smuggle anything: their items must be
  built by the same unpickler.

During our loads the allow-list is *exactly* this one: torch's process-wide list (what
``torch.serialization.add_safe_globals`` collected -- torch.distributed alone adds every builtin
exception and ``traceback.FrameSummary``, whose constructor reads lines of any local file) is
set aside for the loading thread only, and left untouched for the user and for other threads
(:func:`exclusive_globals`). Before unpickling, a zip record that is compressed is refused
(``torch.save`` never compresses; torch's reader would inflate a 400 KB record to 400 MB).
After unpickling, every tensor must be dense and fit in its storage (a stride-0 "tensor" of a
2 KB file can expand to gigabytes in a converter; a sparse one claims any shape), every numpy
dtype must be a plain numeric one (BUILD can give an allowed dtype hidden object fields), no
container may hold more than a million items nor nest more than 64 deep, and the plain data
that mmengine acts on is made inert (:mod:`.inert`: config text that it would execute, paths
that it would delete). :mod:`.remote` sends every scheme of mmengine's ``CheckpointLoader``
(URLs included) here.

A file the safe loader refuses, or one that is not a (complete) checkpoint, raises
:class:`CheckpointLoadError` with a message saying which.
"""
import argparse
import io
import os.path as osp
import pickle
import threading
import zipfile
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.runner.checkpoint import CheckpointLoader
from torch import _weights_only_unpickler as _wou

from ..errors import UserInputError
from .inert import neutralise, warn_changes


class CheckpointLoadError(UserInputError):
    """A checkpoint file cannot be loaded safely; the message says why and what to do."""


# ----------------------------------------------------------------------------- stand-ins
def _history_buffer_class():
    from mmengine.logging.history_buffer import HistoryBuffer
    return HistoryBuffer


def _refuse(what):
    raise pickle.UnpicklingError(f'refused by mmtlalign\'s checkpoint loader: {what}')


def _statistics_methods():
    """HistoryBuffer's statistics methods: the four defaults and any registered since (the
    class-wide table is filled only once a buffer has been created in this process)."""
    HistoryBuffer = _history_buffer_class()
    defaults = {name: getattr(HistoryBuffer, name) for name in ('min', 'max', 'current', 'mean')}
    return {**defaults, **HistoryBuffer._statistics_methods}


def _history_buffer_statistic(owner, name):
    """Stand-in for ``builtins.getattr``: only ``HistoryBuffer``'s statistics methods."""
    HistoryBuffer = _history_buffer_class()
    methods = _statistics_methods()
    if (owner not in (HistoryBuffer, _CheckedHistoryBuffer) or not isinstance(name, str)
            or name.startswith('_') or name not in methods):
        _refuse(f'getattr({owner!r}, {name!r}); only the statistics methods of HistoryBuffer '
                f'({", ".join(sorted(methods))}) may be looked up')
    return methods[name]


def _checked_array(value, key):
    if not isinstance(value, np.ndarray) or value.dtype.kind not in 'biuf':
        _refuse(f'HistoryBuffer.{key} must be a numeric numpy array, got {type(value).__name__}')
    return value


class _CheckedHistoryBuffer(_history_buffer_class()):
    """What the unpickler builds for ``mmengine.logging.history_buffer.HistoryBuffer``."""

    def __setstate__(self, state):
        HistoryBuffer = _history_buffer_class()
        fields = {'max_length', '_log_history', '_count_history', 'statistics_methods'}
        if not isinstance(state, dict) or not set(state) <= fields:
            extra = sorted(set(state) - fields) if isinstance(state, dict) else type(state)
            _refuse(f'HistoryBuffer state with unexpected fields {extra}')
        state = dict(state)
        if not isinstance(state.get('max_length', 0), int):
            _refuse('HistoryBuffer.max_length must be an int')
        for key in ('_log_history', '_count_history'):
            if key in state:
                _checked_array(state[key], key)
        methods, own = state.get('statistics_methods', {}), _statistics_methods()
        if not isinstance(methods, dict) or any(own.get(k) is not v for k, v in methods.items()):
            _refuse('HistoryBuffer.statistics_methods may only hold its own statistics methods')
        HistoryBuffer.__setstate__(self, state)
        self.__class__ = HistoryBuffer  # a plain buffer from now on (and when saved again)


class _CheckedNamespace(argparse.Namespace):
    """What the unpickler builds for ``argparse.Namespace`` (the official DeiT / TL-Align
    training checkpoints store their command line): plain values only."""
    _PLAIN = (str, int, float, bool, type(None))

    def __setstate__(self, state):
        if not isinstance(state, dict):
            _refuse('argparse.Namespace state must be a dict')
        for key, value in state.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            if (not isinstance(key, str) or key.startswith('__')
                    or not all(isinstance(v, self._PLAIN) for v in items)):
                _refuse(f'argparse.Namespace field {key!r} must hold plain values')
        self.__dict__.update(state)
        self.__class__ = argparse.Namespace


# ----------------------------------------------------------------------------- allow-list
def _checked_scalar(dtype, *data):
    """Stand-in for numpy's scalar reconstructor: the dtype is checked before numpy reads the
    bytes as values of it."""
    _check_dtype(dtype, 'a numpy scalar')
    return _numpy_multiarray().scalar(dtype, *data)


def _numpy_multiarray():
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    return multiarray


def _numpy_globals():
    reconstruct = _numpy_multiarray()._reconstruct
    named = []
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        named += [(reconstruct, f'{module}._reconstruct'), (_checked_scalar, f'{module}.scalar')]
    dtype_classes = [type(np.dtype(name)) for name in (
        'float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')]
    return named + [np.ndarray, np.dtype] + dtype_classes


def mmengine_checkpoint_globals():
    """The allow-list for checkpoints that mmengine's Runner saves (see the module docstring).

    Returns:
        list: entries for :func:`torch.serialization.safe_globals`: objects, or
        ``(stand-in, 'module.name')`` pairs that map a pickled name to a restricted stand-in.
    """
    return [(_CheckedHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
            (_history_buffer_statistic, 'builtins.getattr')] + _numpy_globals()


NAMESPACE_GLOBALS = [(_CheckedNamespace, 'argparse.Namespace')]


# ----------------------------------------------------------------------------- exclusive list
_local = threading.local()  # .allowed: {pickled name: object} during our loads in this thread


def _as_allowed(entries):
    """``{pickled name: object}`` for allow-list entries (as torch names them)."""
    allowed = {}
    for entry in entries:
        if isinstance(entry, tuple):
            obj, name = entry
        else:
            obj, name = entry, f'{entry.__module__}.{entry.__qualname__}'
        allowed[name] = obj
    return allowed


def _install_thread_local_globals():
    """Make torch's unpickler ask this thread's allow-list first (once per process).

    torch's weights-only unpickler calls ``_get_user_allowed_globals()`` for every GLOBAL,
    NEWOBJ, REDUCE and BUILD; the replacement returns our list while :func:`exclusive_globals`
    is active in the calling thread, and torch's own process-wide list otherwise.
    """
    original = _wou._get_user_allowed_globals
    if getattr(original, '_mmtlalign', False):
        return

    def _get_user_allowed_globals():
        allowed = getattr(_local, 'allowed', None)
        return dict(allowed) if allowed is not None else original()

    _get_user_allowed_globals._mmtlalign = True
    _wou._get_user_allowed_globals = _get_user_allowed_globals


@contextmanager
def exclusive_globals(entries):
    """Inside, this thread's weights-only loads allow exactly ``entries`` (beside torch's
    built-in tensor types), whatever the process-wide list holds; other threads and the
    process-wide list are not touched."""
    _install_thread_local_globals()
    previous = getattr(_local, 'allowed', None)
    _local.allowed = _as_allowed(entries)
    try:
        yield
    finally:
        _local.allowed = previous


def checkpoint_globals(extra=()):
    """:func:`exclusive_globals` with :func:`mmengine_checkpoint_globals` (and ``extra``)."""
    return exclusive_globals(mmengine_checkpoint_globals() + list(extra))


# ----------------------------------------------------------------------------- after loading
_PLAIN_KINDS = 'biuf'


def _check_tensor(t, where):
    """A tensor must be a dense (strided) one that fits in its own storage: no stride-0 or
    overlapping expansion.

    Sparse (COO/CSR/CSC/BSR/BSC) and nested tensors are refused outright rather than checked:
    no mmengine, mmpretrain, mmdet, mmseg or timm checkpoint holds one, so there is nothing to
    keep, and their size is set by a separate shape that torch checks only against the
    indices, not against what ``to_dense()`` (or any dense op a converter applies) would
    allocate -- a 1 KB file can claim a 10^12-element tensor.
    """
    if t.layout != torch.strided:
        _refuse(f'tensor {where} has layout {t.layout} of shape {tuple(t.shape)}; checkpoints '
                'hold dense tensors only')
    if any(s < 0 for s in t.stride()):
        _refuse(f'tensor {where} has a negative stride')
    needed = t.numel() * t.element_size()
    if needed > t.untyped_storage().nbytes():
        _refuse(f'tensor {where} of shape {tuple(t.shape)} and strides {t.stride()} claims '
                f'{needed} bytes from a storage of {t.untyped_storage().nbytes()}: its elements '
                'overlap (a stride-0 expansion)')


def _check_dtype(dtype, where):
    if (not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or dtype.fields
            or dtype.subdtype is not None or dtype.hasobject
            or dtype.itemsize != np.dtype(dtype.str).itemsize):
        _refuse(f'numpy dtype at {where} is not a plain numeric dtype')


#: the most items of one container: ImageNet-21k's 21841 class names, a detector's or
#: optimizer's few thousand parameter entries are far below; a 10^7-name ``dataset_meta``
#: makes visualisers build 10^7 palette entries and logs print them
MAX_ITEMS = 1_000_000
#: the deepest nesting: mmengine's checkpoints nest about 6 levels
MAX_DEPTH = 64


def check_plain(obj, where='checkpoint', depth=0):
    """Walk what the unpickler built; refuse tensors that are not dense or overflow their
    storage, numpy values of non-plain dtypes, containers of more than :data:`MAX_ITEMS`
    items and nesting deeper than :data:`MAX_DEPTH` (before anything recurses into it)."""
    if depth > MAX_DEPTH:
        _refuse(f'{where} is nested more than {MAX_DEPTH} levels deep')
    if isinstance(obj, (dict, list, tuple, set, frozenset)) and len(obj) > MAX_ITEMS:
        _refuse(f'{where} holds {len(obj)} items (more than {MAX_ITEMS}): no checkpoint '
                'needs that many')
    if torch.is_tensor(obj):
        _check_tensor(obj, where)
    elif isinstance(obj, np.dtype):
        _check_dtype(obj, where)
    elif isinstance(obj, (np.ndarray, np.generic)):
        _check_dtype(obj.dtype, where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_plain(v, f'{where}[{k!r}]'[:300], depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            check_plain(v, f'{where}[{i}]'[:300], depth + 1)
    elif hasattr(obj, '__dict__') and not isinstance(obj, type):  # buffers, Namespace
        for k, v in vars(obj).items():
            check_plain(v, f'{where}.{k}'[:300], depth + 1)


def check_zip_records(source, name):
    """Refuse a zip checkpoint with a compressed record, before torch reads it.

    ``torch.save`` stores every record uncompressed (``ZIP_STORED``), but torch's reader
    inflates DEFLATE records, so a 400 KB file can become a 400 MB tensor that fits its storage
    (about 1000x the file). A stored record takes at most the file's size.

    Args:
        source (str | file): the checkpoint's path, or a seekable binary file.
        name (str): how to name it in the error.
    """
    if not zipfile.is_zipfile(source):
        return  # torch's legacy (pre-1.6) format: a plain pickle stream, nothing inflates
    if hasattr(source, 'seek'):
        source.seek(0)
    try:
        with zipfile.ZipFile(source) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointLoadError(f'{name!r} is not a readable PyTorch checkpoint (a damaged '
                                  f'zip archive: {e}). Re-download or re-save it.') from None
    finally:
        if hasattr(source, 'seek'):
            source.seek(0)
    packed = [r for r in records if r.compress_type != zipfile.ZIP_STORED]
    if packed:
        r = packed[0]
        raise CheckpointLoadError(
            f'checkpoint {name!r} has {len(packed)} compressed record(s) (first: {r.filename!r}, '
            f'{r.compress_size} bytes that inflate to {r.file_size}); torch.save never '
            'compresses, so the file was repacked by other tools or made to exhaust memory. '
            'Do not load it unless you know where it came from (re-save it with torch.save).')


# ----------------------------------------------------------------------------- loading
_REFUSED = ('Unsupported global', 'Can only build', 'Can only create new object',
            'Trying to call reduce', 'refused by mmtlalign', 'is blocked')


def load_checkpoint_file(path, map_location='cpu', extra_globals=()):
    """``torch.load(path, weights_only=True)`` with the mmengine allow-list, clear errors.

    Args:
        path (str): a local file, or a name that mmengine's ``CheckpointLoader`` knows
            (``https://...``, ``open-mmlab://...``): its scheme, routed by :mod:`.remote`,
            fetches the file and loads it here.
        map_location: as :func:`torch.load`.
        extra_globals (Sequence): more allow-list entries for this load only (local files).

    Raises:
        FileNotFoundError: no such file.
        CheckpointLoadError: the file holds objects the safe loader refuses, has compressed
            records, or is not a complete PyTorch checkpoint.
    """
    if '://' in path and not osp.isfile(osp.expanduser(path)):
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    return load_local_checkpoint(path, map_location, extra_globals)


def load_local_checkpoint(path, map_location='cpu', extra_globals=()):
    """:func:`load_checkpoint_file` for a local file only (mmengine's ``''`` scheme)."""
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} can not be found.')
    return _load_checked(path, path, map_location, extra_globals)


def load_checkpoint_bytes(data, name, map_location='cpu'):
    """:func:`load_checkpoint_file` for a checkpoint already in memory (a file backend's
    ``get``); ``name`` names it in errors and is where a ``best_ckpt`` would have to be."""
    return _load_checked(io.BytesIO(data), name, map_location, ())


def _load_checked(source, name, map_location, extra_globals):
    check_zip_records(source, name)
    try:
        with checkpoint_globals(extra_globals):
            checkpoint = torch.load(source, map_location=map_location, weights_only=True)
        check_plain(checkpoint)
    except (FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointLoadError(_describe_failure(name, e)) from None
    warn_changes(name, neutralise(checkpoint, name))
    return checkpoint


def _describe_failure(path, error):
    text = ' '.join(str(error).split())
    if isinstance(error, pickle.UnpicklingError) and any(m in text for m in _REFUSED):
        detail = text.split('WeightsUnpickler error:')[-1].strip()
        detail = detail.split(' Please use `torch')[0].split(' Check the documentation')[0]
        return (f'checkpoint {path!r} holds objects that the weights-only loader refuses '
                f'({detail[:300]}). mmengine checkpoints, mmpretrain/timm weights and the '
                'files mmtlalign writes never need them: the file was made by other code, or '
                'was tampered with. Do not load it unless you know where it came from.')
    return (f'{path!r} is not a readable PyTorch checkpoint (truncated, corrupt, or another '
            f'kind of file: {type(error).__name__}: {text[:200]}). Re-download or re-save it.')
