from .classifier import TLAlignClassifier
from .labels import LABEL_RULES, AreaLabel, LabelRule, TLAlignLabel, TransMixLabel, build_label_rule
from .mixing import MixedBatch, TLAlignMix
from .swin import AlignedSwinTransformer
from .vit import AlignedVisionTransformer

try:  # SimpleFeaturePyramid (mmdet neck for plain ViTs); the rest works without mmdet
    from . import necks  # noqa: F401
except ModuleNotFoundError as e:
    if not (e.name or '').startswith('mmdet'):
        raise

__all__ = [
    'AlignedSwinTransformer', 'AlignedVisionTransformer', 'AreaLabel', 'LABEL_RULES', 'LabelRule',
    'MixedBatch', 'TLAlignClassifier', 'TLAlignLabel', 'TLAlignMix', 'TransMixLabel',
    'build_label_rule'
]
