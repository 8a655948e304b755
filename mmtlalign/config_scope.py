"""``_base_ = 'mmtlalign::tlalign/deit-s_8xb128.py'``: our configs as bases of a user's own.

mmengine resolves ``'<scope>::<path>'`` bases only for the packages of a fixed table
(``mmengine.config.utils.MODULE2PACKAGE``: mmpretrain, mmdet, mmseg, ...) and finds their files
through ``pkg_resources`` metadata, which an editable install does not lay out the way it
expects. Importing mmtlalign (a config's ``custom_imports``, or any of our tools, which import it
before they read a config) teaches :meth:`mmengine.config.Config._get_cfg_path` one more prefix:

* ``mmtlalign::<path under configs/>``, e.g. ``'mmtlalign::tlalign/deit-s_8xb128.py'``, or a
  config's bare name when it is unique, e.g. ``'mmtlalign::deit-s_8xb128.py'``;
* the file is found where :func:`mmtlalign.paths.project_root` finds ``configs/`` (the
  checkout of an editable install, or ``mmtlalign/.mim`` of a wheel), and only there: a name
  that leads out of ``configs/`` (``..``, an absolute path, a symlink) is refused in one line;
* the base is inherited exactly as a path would be (no ``_scope_`` is added: our configs set
  ``default_scope`` themselves and their inherited parts carry the upstream scopes).

Every other base goes to mmengine unchanged. A process that reads the config without importing
mmtlalign first (e.g. mmpretrain's own ``tools/train.py``) does not know the prefix: there, use the
config's path.
"""
import glob
import os.path as osp
from typing import Optional, Tuple

from mmengine.config import Config

from .paths import project_root

PREFIX = 'mmtlalign::'


def _inside(root: str, path: str) -> bool:
    """Whether ``path``, symlinks and ``..`` resolved, lies under ``root`` (resolved too)."""
    root, path = osp.realpath(root), osp.realpath(path)
    return osp.commonpath([root, path]) == root


def resolve(name: str) -> str:
    """The file of ``mmtlalign::<name>``, always under ``configs/``; FileNotFoundError (one
    line) when there is none, or when ``name`` leads out of ``configs/`` (``..``, an absolute
    path, a symlink): a config that a scoped name reaches is one the package ships."""
    root = osp.join(project_root(), 'configs')
    path = osp.join(root, name)  # an absolute name replaces root here: checked below
    if not _inside(root, path):
        raise FileNotFoundError(
            f"'{PREFIX}{name}' points outside {root}: '{PREFIX}' names only the configs "
            "mmtlalign ships (a path under configs/); give a file elsewhere by its plain path")
    if osp.isfile(path):
        return path
    if '/' not in name:  # a bare config name, as mim takes them
        base = glob.escape(name if name.endswith('.py') else name + '.py')
        matches = sorted(m for m in glob.glob(osp.join(root, '**', base), recursive=True)
                         if _inside(root, m))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise FileNotFoundError(
                f"'{PREFIX}{name}' is ambiguous: "
                + ', '.join(repr(PREFIX + osp.relpath(m, root)) for m in matches))
    raise FileNotFoundError(
        f"'{PREFIX}{name}': there is no {name} under {root} (give the path under configs/, "
        f"e.g. '{PREFIX}tlalign/deit-s_8xb128.py')")


def install() -> None:
    """Teach mmengine's ``Config`` the ``mmtlalign::`` prefix (idempotent)."""
    original = Config.__dict__['_get_cfg_path']
    func = getattr(original, '__func__', original)
    if getattr(func, 'mmtlalign_scope', False):
        return

    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        if isinstance(cfg_path, str) and cfg_path.startswith(PREFIX):
            return resolve(cfg_path[len(PREFIX):]), None
        return func(cfg_path, filename)

    _get_cfg_path.mmtlalign_scope = True
    _get_cfg_path.__doc__ = func.__doc__
    Config._get_cfg_path = staticmethod(_get_cfg_path)
