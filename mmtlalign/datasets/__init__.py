"""Datasets: Fashion-MNIST prepared out of the box (Debian package, else mmpretrain's download)."""
from .fashion_mnist import (FashionMNISTError, PreparedFashionMNIST, default_root,
                            prepare_fashion_mnist)
from . import imagenet_robustness  # noqa: F401  (ImageNet-V2/-A/-R/-Sketch/-C in DATASETS)

__all__ = ['FashionMNISTError', 'PreparedFashionMNIST', 'default_root', 'prepare_fashion_mnist']
