from .classifier import TLAlignClassifier
from .mixing import MixedBatch, TLAlignMix
from .swin import AlignedSwinTransformer
from .vit import AlignedVisionTransformer

try:  # SimpleFeaturePyramid (mmdet neck for plain ViTs); the rest works without mmdet
    from . import necks  # noqa: F401
except ModuleNotFoundError as e:
    if not (e.name or '').startswith('mmdet'):
        raise

__all__ = [
    'AlignedSwinTransformer', 'AlignedVisionTransformer', 'MixedBatch', 'TLAlignClassifier',
    'TLAlignMix'
]
