from .classifier import TLAlignClassifier
from .mixing import MixedBatch, TLAlignMix
from .swin import AlignedSwinTransformer
from .vit import AlignedVisionTransformer

__all__ = [
    'AlignedSwinTransformer', 'AlignedVisionTransformer', 'MixedBatch', 'TLAlignClassifier',
    'TLAlignMix'
]
