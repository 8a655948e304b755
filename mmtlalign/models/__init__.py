from .classifier import TLAlignClassifier
from .mixing import MixedBatch, TLAlignMix
from .vit import AlignedVisionTransformer

__all__ = [
    'AlignedVisionTransformer', 'MixedBatch', 'TLAlignClassifier', 'TLAlignMix'
]
