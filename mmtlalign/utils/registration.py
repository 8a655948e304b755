"""Make the aligned backbones buildable from mmdet and mmseg configs by their plain names."""
import importlib

from mmpretrain.registry import MODELS as PRETRAIN_MODELS

# Backbones shared with the dense-prediction toolboxes; TL-Align is a pre-training method, so
# there they run their plain (parent) forward.
DOWNSTREAM_BACKBONES = ('AlignedVisionTransformer', 'AlignedSwinTransformer')


def register_backbones_downstream():
    """Register the aligned backbones in mmdet's and mmseg's ``MODELS`` where installed."""
    for scope in ('mmdet', 'mmseg'):
        try:
            registry = importlib.import_module(f'{scope}.registry').MODELS
        except ImportError:
            continue
        for name in DOWNSTREAM_BACKBONES:
            cls = PRETRAIN_MODELS.get(name)
            if cls is not None and name not in registry.module_dict:
                registry.register_module(name=name, module=cls)
