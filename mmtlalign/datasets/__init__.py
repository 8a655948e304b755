"""Datasets: Fashion-MNIST prepared out of the box (Debian package, else mmpretrain's download),
and the canvas transform that puts its objects on a larger background."""
from . import imagenet_robustness  # noqa: F401  (ImageNet-V2/-A/-R/-Sketch/-C in DATASETS)
from .canvas import RandomCanvas
from .fashion_mnist import (
    FashionMNISTError,
    PreparedFashionMNIST,
    default_root,
    prepare_fashion_mnist,
)

__all__ = ['FashionMNISTError', 'PreparedFashionMNIST', 'RandomCanvas', 'default_root',
           'prepare_fashion_mnist']
