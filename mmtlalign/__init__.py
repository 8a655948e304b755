"""mmtlalign: Token-Label Alignment (TL-Align) for OpenMMLab.

Importing the package registers its components in mmpretrain's registries (and the backbones in
mmdet's and mmseg's), and routes mmengine's local checkpoint loads through
:func:`mmtlalign.checkpoint.load_checkpoint_file` (weights only; the few types mmengine
checkpoints hold are allowed during those loads alone). Configs reach it with
``custom_imports=dict(imports=['mmtlalign'], allow_failed_imports=False)``.
"""
from .version import __version__
from .checkpoint.loader import use_safe_local_loader
from . import datasets, engine, models  # noqa: F401  (register components)
from .registry import register_backbones_downstream

use_safe_local_loader()
register_backbones_downstream()

__all__ = ['__version__']
