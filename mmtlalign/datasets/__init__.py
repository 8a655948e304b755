"""Datasets: Fashion-MNIST prepared out of the box (Debian package, else mmpretrain's download)."""
from . import imagenet_robustness  # noqa: F401  (ImageNet-V2/-A/-R/-Sketch/-C in DATASETS)
from .fashion_mnist import (
    FashionMNISTError,
    PreparedFashionMNIST,
    default_root,
    prepare_fashion_mnist,
)

__all__ = ['FashionMNISTError', 'PreparedFashionMNIST', 'default_root', 'prepare_fashion_mnist']
