"""mmtlalign: Token-Label Alignment (TL-Align) for OpenMMLab.

Importing the package registers its components in mmpretrain's registries (and the backbones in
mmdet's and mmseg's), and routes every checkpoint load of mmengine's ``CheckpointLoader`` (local
paths, URLs, ``open-mmlab://`` names and the rest: :mod:`mmtlalign.checkpoint.remote`) through
:func:`mmtlalign.checkpoint.load_checkpoint_file` (weights only; the few types mmengine
checkpoints hold are allowed during those loads alone). Configs reach it with
``custom_imports=dict(imports=['mmtlalign'], allow_failed_imports=False)``.

It also teaches mmengine's configs the ``mmtlalign::`` base prefix (:mod:`.config_scope`), and
silences one warning: setuptools' "pkg_resources is deprecated as an API", which mmengine's
``mmpretrain::`` / ``mmdet::`` / ``mmseg::`` bases trigger in every command that reads our configs
(mmengine looks the packages up with ``pkg_resources``; setuptools < 81 is pinned for mmcv's build).
"""
import warnings

# before anything imports pkg_resources: only this message, only setuptools' UserWarning
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)

from . import datasets, engine, models  # noqa: E402,F401  (register components)
from .checkpoint.remote import use_safe_loaders  # noqa: E402
from .config_scope import install as _install_config_scope  # noqa: E402
from .registry import register_backbones_downstream  # noqa: E402
from .version import __version__  # noqa: E402

use_safe_loaders()
register_backbones_downstream()
_install_config_scope()

__all__ = ['__version__']
