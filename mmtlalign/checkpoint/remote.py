"""Checkpoints that arrive by URL or by name: every scheme of mmengine's ``CheckpointLoader``
ends in :func:`~mmtlalign.checkpoint.loader.load_checkpoint_file`.

mmengine picks a loader by the path's prefix (``Runner`` ``load_from`` / ``resume``,
``init_cfg=dict(type='Pretrained')``, ``load_checkpoint``, mmpretrain's ``get_model``, the
inferencers' ``weights=``). Its own URL loaders end in ``torch.hub.load_state_dict_from_url``,
which unpickles with ``weights_only=False``: a file from the network, or one planted in
torch.hub's cache, runs any code it carries. :func:`use_safe_loaders` replaces every scheme:

* ``''`` (local files): the safe loader itself;
* ``http://``, ``https://``: downloaded once into torch.hub's cache
  (``$TORCH_HOME/hub/checkpoints``, with torch.hub's progress bar), then loaded safely. Where
  the file name carries a hash prefix (``name-<8 or more hex digits>.ext``: torch.hub's and
  OpenMMLab's model-zoo convention), the download and every later use of the cached copy must
  match it;
* ``open-mmlab://``, ``openmmlab://``, ``mmcls://``, ``torchvision://`` (``modelzoo://``): the
  name is looked up in mmengine's tables as mmengine does, then as above;
* ``s3://`` / ``petrel://`` (optionally ``backend:s3://``): read through mmengine's file
  backend, then loaded safely from memory;
* ``pavi://`` and any scheme registered by mmengine that we do not know: refused in one line
  (nothing loads them weights-only).

mmengine's ``load_url`` (``mmengine.runner.checkpoint`` and ``mmengine.utils.dl_utils``), which
its own scheme functions call, becomes :func:`load_url`, so calling those functions directly
ends here as well. No OpenMMLab package calls ``torch.hub.load_state_dict_from_url`` by
another way (mmengine 0.10.7, mmpretrain 1.2, mmdet 3.3, mmseg 1.2, mmcv 2.1); torch's own
function is left as torch ships it.
"""
import hashlib
import os
import os.path as osp
import re
import sys
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.utils import dl_utils
from mmengine.utils.dl_utils import hub as dl_utils_hub
from torch.hub import download_url_to_file, get_dir

from .loader import (
                     CheckpointLoadError,
                     load_checkpoint_bytes,
                     load_local_checkpoint,
)

#: ``name-<sha256 prefix>.ext``; torch.hub accepts any number of digits, we want 8 or more so
#: that a version suffix (``-384.pth``) is not mistaken for one
_HASH_PREFIX = re.compile(r'-([a-f0-9]{8,64})\.[^/]*$')
_CHUNK = 1 << 20


def hash_prefix(file_name):
    """The SHA-256 prefix that ``file_name`` carries (``resnet50-0676ba61.pth``), or None."""
    match = _HASH_PREFIX.search(file_name)
    return match.group(1) if match else None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def cached_download(url, model_dir=None, progress=True, file_name=None):
    """The local copy of ``url`` in torch.hub's cache, downloaded first if missing.

    Args:
        url (str): an ``http(s)://`` URL.
        model_dir (str, optional): the cache folder; ``<torch.hub.get_dir()>/checkpoints``
            (``$TORCH_HOME/hub/checkpoints``) by default, as torch.hub and mmengine use.
        progress (bool): torch.hub's progress bar on stderr while downloading.
        file_name (str, optional): the name in the cache (the URL's by default).

    Returns:
        str: the cached file.

    Raises:
        CheckpointLoadError: the download failed, or the file does not match the hash prefix
            its name carries.
    """
    name = osp.basename(file_name or urlparse(url).path)
    if not name or name in ('.', '..'):
        raise CheckpointLoadError(f'{url!r} names no file; give the URL of a .pth file.')
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, name)
    expected = hash_prefix(name)
    if osp.exists(cached):
        if expected and not _sha256(cached).startswith(expected):
            raise CheckpointLoadError(
                f'the cached copy {cached!r} of {url!r} does not match the SHA-256 prefix '
                f'{expected!r} its name carries (changed or planted after the download). '
                'Delete it to download the file again.')
        return cached
    sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
    try:  # torch.hub's downloader: a temporary file, moved into place once it checked out
        download_url_to_file(url, cached, expected, progress=progress)
    except RuntimeError as e:
        if 'invalid hash value' not in str(e):
            raise
        raise CheckpointLoadError(
            f'{url!r} does not match the SHA-256 prefix {expected!r} its file name carries '
            f'({" ".join(str(e).split())}): the server sent another file. Nothing was '
            'kept; check the URL.') from None
    except (URLError, OSError) as e:
        raise CheckpointLoadError(f'cannot download {url!r}: {getattr(e, "reason", e)}. '
                                  'Check the URL and the network, or download the file and '
                                  'pass its local path.') from None
    return cached


def load_url(url, model_dir=None, map_location=None, progress=True, check_hash=False,
             file_name=None, weights_only=True):
    """Stands in for mmengine's ``load_url`` (torch.hub's ``load_state_dict_from_url``): the
    cached download, then the safe loader. ``check_hash`` is implied (a hash prefix in the
    name is always checked); ``weights_only`` cannot be turned off."""
    del check_hash, weights_only
    return load_local_checkpoint(cached_download(url, model_dir, progress, file_name),
                                 map_location=map_location)


# ----------------------------------------------------------------------------- the schemes
def load_from_local(filename, map_location=None):
    """mmengine's ``''`` scheme."""
    return load_local_checkpoint(filename, map_location=map_location)


def load_from_http(filename, map_location=None, model_dir=None):
    """``http://`` / ``https://``: rank 0 downloads first (as mmengine's loader does), the
    other ranks use its copy."""
    rank, world_size = get_dist_info()
    if rank == 0:
        path = cached_download(filename, model_dir)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = cached_download(filename, model_dir)
    return load_local_checkpoint(path, map_location=map_location)


def _lookup(table, name, filename, what):
    if name not in table:
        raise CheckpointLoadError(f'{filename!r}: {what} has no model named {name!r}; check '
                                  'the name or give the checkpoint\'s URL or path.')
    return table[name]


def load_from_torchvision(filename, map_location=None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    name = filename.split('://', 1)[1]
    url = _lookup(mmengine_checkpoint.get_torchvision_models(), name, filename, 'torchvision')
    return load_from_http(url, map_location=map_location)


def load_from_openmmlab(filename, map_location=None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's table (and its deprecated
    names); an entry that is not a URL is a file in mmengine's home."""
    name = filename.split('://', 1)[1]
    name = mmengine_checkpoint.get_deprecated_model_names().get(name, name)
    url = _lookup(mmengine_checkpoint.get_external_models(), name, filename,
                  'the OpenMMLab model table')
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return load_local_checkpoint(osp.join(mmengine_checkpoint._get_mmengine_home(), url),
                                 map_location=map_location)


def load_from_mmcls(filename, map_location=None):
    """``mmcls://NAME``: the backbone of an mmcls classifier, as mmengine returns it."""
    url = _lookup(mmengine_checkpoint.get_mmcls_models(), filename[len('mmcls://'):], filename,
                  'mmcls')
    return mmengine_checkpoint._process_mmcls_checkpoint(
        load_from_http(url, map_location=map_location))


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """``s3://`` / ``petrel://``: the bytes from mmengine's file backend, loaded safely."""
    try:
        file_backend = get_file_backend(filename, backend_args={'backend': backend})
        data = file_backend.get(filename)
    except ImportError as e:
        raise CheckpointLoadError(
            f'{filename!r} needs mmengine\'s {backend!r} file backend, which is not installed '
            f'({e}). Install it, or copy the file and pass its local path.') from None
    return load_checkpoint_bytes(data, filename, map_location=map_location)


def load_from_unsupported(filename, map_location=None):
    scheme = filename.split('://', 1)[0] + '://' if '://' in filename else filename[:20]
    raise CheckpointLoadError(
        f'{filename!r}: checkpoints by {scheme} cannot be loaded safely (its loader unpickles '
        'without weights_only, so the file could run code). Download the file with that '
        'service\'s own tools and pass its local path.')


#: mmengine's prefixes (regular expressions, matched at the start) and our loader for each
SCHEMES = {
    '': load_from_local,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
    'pavi://': load_from_unsupported,
}


def use_safe_loaders():
    """Route every scheme of mmengine's ``CheckpointLoader`` through :mod:`.loader` (see the
    module docstring); a scheme mmengine registered that is not in :data:`SCHEMES` is refused
    rather than left to unpickle. Call once, after mmengine is imported (``import mmtlalign``
    does)."""
    CheckpointLoader = mmengine_checkpoint.CheckpointLoader
    # mmengine's own loader functions stay importable (load_from_http, load_from_torchvision
    # ...); they fetch through this module-level name, so they end here too
    for module in (mmengine_checkpoint, dl_utils, dl_utils_hub):
        module.load_url = load_url
    ours = set()
    for prefixes, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
        ours.update([prefixes] if isinstance(prefixes, str) else prefixes)
    others = [p for p in CheckpointLoader._schemes if p not in ours]
    if others:
        CheckpointLoader.register_scheme(prefixes=others, loader=load_from_unsupported, force=True)
