"""Datasets: Fashion-MNIST prepared out of the box (Debian package, else mmpretrain's download)."""
from .fashion_mnist import (FashionMNISTError, PreparedFashionMNIST, default_root,
                            prepare_fashion_mnist)

__all__ = ['FashionMNISTError', 'PreparedFashionMNIST', 'default_root', 'prepare_fashion_mnist']
