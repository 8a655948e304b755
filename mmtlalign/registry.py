"""mmtlalign's own registries, where OpenMMLab looks for them (``<scope>.registry``).

The models themselves (classifier, backbones, mixer) are registered in mmpretrain's ``MODELS``
so that inherited mmpretrain configs build them by name. Label rules have a registry of their
own, a child of mmpretrain's ``MODELS`` in the ``mmtlalign`` scope.
"""
import importlib

from mmengine.registry import Registry
from mmpretrain.registry import MODELS

#: label rules for mixed batches (:mod:`mmtlalign.models.labels`): area, TL-Align, TransMix
LABEL_RULES = Registry('label rule', parent=MODELS, scope='mmtlalign',
                       locations=['mmtlalign.models.labels'])


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
            cls = MODELS.get(name)
            if cls is not None and name not in registry.module_dict:
                registry.register_module(name=name, module=cls)
