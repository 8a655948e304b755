from .block_mask import BlockMaskMix
from .classifier import TLAlignClassifier
from .labels import (
    LABEL_RULES,
    AreaLabel,
    LabelRule,
    PALLabel,
    SMMixLabel,
    TLAlignLabel,
    TransMixLabel,
    build_label_rule,
)
from .maskmix import MaskMix
from .mix_choice import RandomChoiceMix
from .mixing import BatchMixer, MixedBatch, TLAlignMix
from .smmix import SMMix
from .swin import AlignedSwinTransformer
from .vit import AlignedVisionTransformer

try:  # SimpleFeaturePyramid (mmdet neck for plain ViTs); the rest works without mmdet
    from . import necks  # noqa: F401
except ModuleNotFoundError as e:
    if not (e.name or '').startswith('mmdet'):
        raise

__all__ = [
    'AlignedSwinTransformer', 'AlignedVisionTransformer', 'AreaLabel', 'BatchMixer',
    'BlockMaskMix', 'LABEL_RULES', 'LabelRule', 'MaskMix', 'MixedBatch', 'PALLabel',
    'RandomChoiceMix', 'SMMix', 'SMMixLabel', 'TLAlignClassifier', 'TLAlignLabel',
    'TLAlignMix', 'TransMixLabel', 'build_label_rule'
]
