"""mmtlalign's own registries, where OpenMMLab looks for them (``<scope>.registry``).

The models themselves (classifier, backbones, mixer) are registered in mmpretrain's ``MODELS``
so that inherited mmpretrain configs build them by name. Label rules have a registry of their
own, a child of mmpretrain's ``MODELS`` in the ``mmtlalign`` scope.
"""
from mmengine.registry import Registry
from mmpretrain.registry import MODELS

#: label rules for mixed batches (:mod:`mmtlalign.models.labels`): area, TL-Align, TransMix
LABEL_RULES = Registry('label rule', parent=MODELS, scope='mmtlalign',
                       locations=['mmtlalign.models.labels'])
