"""Datasets: Fashion-MNIST prepared out of the box (Debian package, else mmpretrain's download),
the canvas transform that puts its objects on a larger background, and ImageNet's validation
boxes as foreground masks."""
from . import imagenet_robustness  # noqa: F401  (ImageNet-V2/-A/-R/-Sketch/-C in DATASETS)
from .canvas import RandomCanvas
from .fashion_mnist import (
    FashionMNISTError,
    PreparedFashionMNIST,
    default_root,
    prepare_fashion_mnist,
)
from .imagenet_boxes import FgMaskFromBoxes, ImageNetBoxes

__all__ = ['FashionMNISTError', 'FgMaskFromBoxes', 'ImageNetBoxes', 'PreparedFashionMNIST',
           'RandomCanvas', 'default_root', 'prepare_fashion_mnist']
