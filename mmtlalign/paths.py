"""Where mmtlalign's tools and configs are: the one checked place the package looks them up.

In a checkout (and its editable install) they sit beside the package; in a wheel or sdist
install they are packaged under ``mmtlalign/.mim`` (as OpenMMLab packages do, for ``mim``).
"""
import os.path as osp
from functools import lru_cache
from typing import Iterator

from .errors import UserInputError

_PACKAGE = osp.dirname(osp.abspath(__file__))


def _candidates() -> Iterator[str]:
    yield osp.dirname(_PACKAGE)          # a checkout: <repo>/mmtlalign
    yield osp.join(_PACKAGE, '.mim')     # an installed package


@lru_cache(maxsize=None)  # the install does not move while we run
def project_root() -> str:
    """The folder that holds ``tools/`` and ``configs/``.

    Raises:
        UserInputError: neither a checkout nor an installed ``.mim`` folder has them.
    """
    for root in _candidates():
        if osp.isfile(osp.join(root, 'tools', 'train.py')) and osp.isdir(
                osp.join(root, 'configs')):
            return osp.realpath(root)
    raise UserInputError(
        f'mmtlalign\'s tools/ and configs/ were found neither beside the package ({_PACKAGE}) '
        'nor in its .mim folder: this install is incomplete. Reinstall it from a checkout '
        '(`pip install -e .`) or from its sdist/wheel.')


def tool_path(*parts: str) -> str:
    """The path of a tool, e.g. ``tool_path('train.py')``; raises when it is not there."""
    path = osp.join(project_root(), 'tools', *parts)
    if not osp.isfile(path):
        raise UserInputError(f'mmtlalign tool {"/".join(parts)} is missing at {path}: '
                             'this install is incomplete; reinstall mmtlalign.')
    return path


def config_path(*parts: str) -> str:
    """The path of a file under ``configs/``."""
    return osp.join(project_root(), 'configs', *parts)

