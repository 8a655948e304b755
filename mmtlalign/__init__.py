"""mmtlalign: Token-Label Alignment (TL-Align) for OpenMMLab.

Importing the package registers its components in mmpretrain's registries (and the backbones in
mmdet's and mmseg's), and allow-lists the exact types mmengine checkpoints hold for torch's
``weights_only`` loading. Configs reach it with
``custom_imports=dict(imports=['mmtlalign'], allow_failed_imports=False)``.
"""
from .version import __version__
from .utils.safe_load import allow_mmengine_checkpoint_types
from . import datasets, engine, models  # noqa: F401  (register components)
from .utils.registration import register_backbones_downstream

allow_mmengine_checkpoint_types()
register_backbones_downstream()

__all__ = ['__version__']
