"""ImageNet validation images with their ILSVRC bounding boxes, as foreground masks.

The boxes come from the standard annotation files: ``ILSVRC2012_bbox_val_v3.tgz`` unpacks to
``val/ILSVRC2012_val_00000001.xml`` ..., one Pascal-VOC XML per validation image::

    <annotation><size><width>500</width><height>375</height>...</size>
      <object><name>n01751748</name><bndbox><xmin>111</xmin><ymin>108</ymin>
        <xmax>371</xmax><ymax>270</ymax></bndbox></object> ...</annotation>

:class:`ImageNetBoxes` is mmpretrain's :class:`~mmpretrain.datasets.ImageNet` (its layout:
``val/*.JPEG`` with ``meta/val.txt``) whose samples also carry ``gt_bboxes`` (N, 4) (x1, y1,
x2, y2, pixels, end exclusive) and ``box_size`` (h, w) as the XML states them.

:class:`FgMaskFromBoxes` turns them into ``results['fg_mask']`` for the image *as the model
sees it*: the union of the boxes is drawn at the loaded image's size and carried through the
geometric steps it wraps (resize, crop, flip) as an extra image channel, so mask and image
always undergo the same operation with the same parameters, then split off again::

    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='FgMaskFromBoxes', transforms=[
            dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
            dict(type='CenterCrop', crop_size=224)]),
        dict(type='PackInputs', algorithm_keys=['fg_mask']),
    ]

Wrap geometric steps only (a colour step would treat the mask channel as colour).
"""
import os.path as osp
import xml.etree.ElementTree as ET

import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmpretrain.datasets import ImageNet
from mmpretrain.registry import DATASETS, TRANSFORMS

from ..errors import UserInputError
from .imagenet_robustness import RobustnessSetMissing

#: an ILSVRC box file is a few hundred bytes; anything far larger is not one
MAX_XML_BYTES = 1 << 20


def read_boxes(path):
    """``(boxes (N, 4) float32 x1, y1, x2, y2 with x2, y2 exclusive, (height, width))`` from an
    ILSVRC Pascal-VOC XML file. ILSVRC's ``xmax``/``ymax`` are the last pixel of the box."""
    if osp.getsize(path) > MAX_XML_BYTES:
        raise UserInputError(f'{path}: {osp.getsize(path)} bytes is not an ILSVRC box file.')
    try:
        root = ET.parse(path).getroot()
        size = root.find('size')
        hw = (int(size.findtext('height')), int(size.findtext('width')))
        boxes = []
        for obj in root.iter('object'):
            b = obj.find('bndbox')
            x1, y1, x2, y2 = (float(b.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            boxes.append((x1, y1, x2 + 1, y2 + 1))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise UserInputError(f'{path}: not an ILSVRC box file (Pascal-VOC XML with '
                             f'size/height, size/width and object/bndbox/xmin..ymax): {e}') from e
    return np.asarray(boxes, np.float32).reshape(-1, 4), hw


@DATASETS.register_module()
class ImageNetBoxes(ImageNet):
    """:class:`~mmpretrain.datasets.ImageNet` (``split='val'`` by default) with each image's
    ILSVRC boxes (``gt_bboxes``, ``box_size``).

    Args:
        data_root (str): the ImageNet root (``val/``, ``meta/val.txt``).
        box_root (str, optional): the folder ``ILSVRC2012_bbox_val_v3.tgz`` was unpacked in
            (holding ``val/*.xml``). Default: ``<data_root>/ILSVRC2012_bbox_val_v3``.
        **kwargs: those of :class:`~mmpretrain.datasets.ImageNet`.
    """

    def __init__(self, data_root='', split='val', box_root=None, **kwargs):
        self.box_root = box_root or osp.join(data_root, 'ILSVRC2012_bbox_val_v3')
        box_dir = osp.join(self.box_root, split)
        if not osp.isdir(box_dir):
            raise RobustnessSetMissing(
                f'ImageNet boxes: no folder {box_dir}; unpack ILSVRC2012_bbox_val_v3.tgz there '
                '(it holds val/ILSVRC2012_val_*.xml) or set box_root.')
        self.box_dir = box_dir
        super().__init__(data_root=data_root, split=split, **kwargs)

    def load_data_list(self):
        data_list = super().load_data_list()
        for info in data_list:
            stem = osp.splitext(osp.basename(info['img_path']))[0]
            path = osp.join(self.box_dir, stem + '.xml')
            if not osp.isfile(path):
                raise UserInputError(f'ImageNet boxes: no box file {path} for '
                                     f'{info["img_path"]}; box_root must hold the boxes of '
                                     'every image of the split.')
            info['gt_bboxes'], info['box_size'] = read_boxes(path)
        return data_list


def box_mask(boxes, box_size, shape):
    """(H, W) bool union of ``boxes`` (given for an image of ``box_size``) on an image of
    ``shape``: boxes are scaled when the file was stored at another size than stated."""
    H, W = shape
    mask = np.zeros((H, W), bool)
    sy, sx = H / box_size[0], W / box_size[1]
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        r1, r2 = int(np.clip(np.floor(y1 * sy), 0, H)), int(np.clip(np.ceil(y2 * sy), 0, H))
        c1, c2 = int(np.clip(np.floor(x1 * sx), 0, W)), int(np.clip(np.ceil(x2 * sx), 0, W))
        mask[r1:r2, c1:c2] = True
    return mask


@TRANSFORMS.register_module()
class FgMaskFromBoxes(BaseTransform):
    """Run ``transforms`` on the image and on the union of its boxes alike; add ``fg_mask``.

    Required keys: ``img`` (H, W[, C]) uint8, ``gt_bboxes``, ``box_size`` (from
    :class:`ImageNetBoxes`). Added key: ``fg_mask`` (H', W') bool, the boxes on the output
    image. The mask rides as one more channel (0 / 255) through the wrapped steps and is read
    back with a threshold at half (interpolation blurs its edge by at most a pixel).

    Args:
        transforms (list[dict]): geometric steps (resize, crop, flip, pad with 0).
    """

    def __init__(self, transforms=()):
        self.transforms = Compose(list(transforms))

    def transform(self, results):
        img = results['img']
        if 'gt_bboxes' not in results:
            raise UserInputError('FgMaskFromBoxes needs the samples\' boxes (gt_bboxes): use '
                                 "dict(type='ImageNetBoxes', ...) as the dataset.")
        mask = box_mask(results['gt_bboxes'], results['box_size'], img.shape[:2])
        planes = img[..., None] if img.ndim == 2 else img
        results['img'] = np.concatenate([planes, mask[..., None].astype(img.dtype) * 255], -1)
        results = self.transforms(results)
        if results is None:
            return None
        out = results['img']
        results['fg_mask'] = out[..., -1] > 127
        results['img'] = out[..., :-1] if img.ndim == 3 else out[..., 0]
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self):
        return f'{type(self).__name__}(transforms={self.transforms})'
