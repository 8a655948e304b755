"""Objects on a larger black canvas: background the label rules have to get right.

On 28x28 Fashion-MNIST the garment fills the image, so the area of a CutMix box is already the
share of the garment it carries, and the label rules cannot differ (issue 33). Placed on a
56x56 black canvas the garment covers a quarter of the image, and a box often lands on
background: then the area share and the share of the *visible garment* part ways, which is what
TL-Align claims to track.

:class:`RandomCanvas` is a pipeline step: it puts the image's object (the bounding box of its
nonzero pixels, never cut) at a uniformly random position on the canvas for training, or in the
centre (``random=False``) for validation and test, and records where the object's pixels are as
``results['fg_mask']``, a bool array (canvas_size, canvas_size). Pack it with
``dict(type='PackInputs', algorithm_keys=['fg_mask'])``; ``data_sample.fg_mask`` then carries
it to the model (the content-share label rule) and to the ``label_fidelity`` evaluation stage.

The position is drawn from numpy's global generator, which mmengine seeds per run (and per
dataloader worker), so a seeded run places every image the same way each time.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS

from ..errors import UserInputError


def object_box(img):
    """(top, left, bottom, right) of the nonzero pixels of ``img`` (H, W) or (H, W, C), bottom
    and right exclusive; the whole image when it has none (nothing to place, nothing lost)."""
    fg = img.reshape(img.shape[0], img.shape[1], -1).any(axis=-1)
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not len(rows):
        return 0, 0, img.shape[0], img.shape[1]
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


@TRANSFORMS.register_module()
class RandomCanvas(BaseTransform):
    """Place the image's object, whole, on a black ``canvas_size`` square.

    Required keys: ``img`` (H, W) or (H, W, C), uint8 or float, black (0) background.
    Modified keys: ``img`` (canvas_size, canvas_size[, C]), same dtype; ``img_shape``.
    Added keys: ``fg_mask`` (canvas_size, canvas_size) bool, True on the object's nonzero
    pixels where they were placed; ``canvas_offset`` (top, left) of the object's box.

    Args:
        canvas_size (int): side of the square canvas, at least the image's larger side.
        random (bool): a uniformly random position among those that keep the object whole
            (training); False: centred (validation, test), the same for every image.
    """

    def __init__(self, canvas_size=56, random=True):
        if not isinstance(canvas_size, int) or canvas_size < 1:
            raise UserInputError(f'RandomCanvas: canvas_size must be a positive int, got '
                                 f'{canvas_size!r}.')
        self.canvas_size = canvas_size
        self.random = random

    def _offset(self, free_h, free_w):
        """(top, left) in [0, free_h] x [0, free_w]; centred unless ``random``."""
        if not self.random:
            return free_h // 2, free_w // 2
        return int(np.random.randint(free_h + 1)), int(np.random.randint(free_w + 1))

    def transform(self, results):
        img = results['img']
        size = self.canvas_size
        if max(img.shape[:2]) > size:
            raise UserInputError(
                f'RandomCanvas: the image is {img.shape[0]}x{img.shape[1]}, larger than the '
                f'{size}x{size} canvas; raise canvas_size or resize the image before this step.')
        top, left, bottom, right = object_box(img)
        obj = img[top:bottom, left:right]
        y, x = self._offset(size - obj.shape[0], size - obj.shape[1])
        canvas = np.zeros((size, size) + img.shape[2:], dtype=img.dtype)
        canvas[y:y + obj.shape[0], x:x + obj.shape[1]] = obj
        results['img'] = canvas
        results['img_shape'] = (size, size)
        results['fg_mask'] = canvas.reshape(size, size, -1).any(axis=-1)
        results['canvas_offset'] = (y, x)
        return results

    def __repr__(self):
        return f'{type(self).__name__}(canvas_size={self.canvas_size}, random={self.random})'
