"""Small datasets written to disk in the real layouts, for tests.

Images are random but structured (a per-class colour plus noise) so that a model can learn a
little, and saved as real image files.
"""
import gzip
import os
import os.path as osp
import struct

import numpy as np
from PIL import Image


def _class_image(rng, label, size):
    base = np.array([(label * 67) % 256, (label * 131) % 256, (label * 197) % 256], np.float32)
    img = base + rng.normal(0, 40, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_imagenet(root, num_classes=4, per_class=4, val_per_class=2, size=64, seed=0):
    """ImageNet layout: ``train/<wnid>/*.JPEG``, ``val/*.JPEG``, ``meta/{train,val}.txt``.

    Returns the root. Class folders are named like ImageNet wnids (n00000000, ...).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    lines = {'train': [], 'val': []}
    for label in range(num_classes):
        wnid = f'n{label:08d}'
        os.makedirs(osp.join(root, 'train', wnid), exist_ok=True)
        for i in range(per_class):
            name = f'{wnid}/{wnid}_{i}.JPEG'
            _class_image(rng, label, size).save(osp.join(root, 'train', name), format='JPEG')
            lines['train'].append(f'{name} {label}')
        os.makedirs(osp.join(root, 'val'), exist_ok=True)
        for i in range(val_per_class):
            name = f'ILSVRC2012_val_{label * val_per_class + i:08d}.JPEG'
            _class_image(rng, label, size).save(osp.join(root, 'val', name), format='JPEG')
            lines['val'].append(f'{name} {label}')
    for split, split_lines in lines.items():
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(split_lines) + '\n')
    return root


# Config text: 64x64 ImageNet pipelines, so that tiny classification runs stay fast on CPU.
TINY_64PX_PIPELINES = """
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
"""


def tiny_deit_config(base, num_classes=None):
    """A 2-block, 48-dim DeiT at 64 px on top of ``base`` (an mmpretrain::... config or a path
    to one of ours), as a user would shrink a recipe; ``num_classes`` for the head (else the
    base's, overridden by :func:`tiny_cls_options` when trained)."""
    head = f'in_channels=48, num_classes={num_classes}' if num_classes else 'in_channels=48'

    imports = ("custom_imports = dict(imports=['mmtlalign'], allow_failed_imports=False)\n"
               if base.startswith('mmpretrain::') else '')
    return TINY_64PX_PIPELINES + f"""
_base_ = {base!r}
{imports}model = dict(backbone=dict(img_size=64, patch_size=16,
                           arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=3,
                                     feedforward_channels=96)),
             head=dict({head}))
randomness = dict(seed=0)
"""


def train_tool(config, work_dir, data_root, *extra, options=()):
    """Run ``tools/train.py`` on the tiny data as a subprocess; the CompletedProcess."""
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    return subprocess.run(
        [sys.executable, osp.join(root, 'tools', 'train.py'), str(config), '--work-dir',
         work_dir, *extra, '--cfg-options', *tiny_cls_options(data_root), *options],
        capture_output=True, text=True, timeout=900, cwd=root,
        env=dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS='1'))


def tiny_cls_options(data_root, num_classes=4, batch_size=4, epochs=1, img_size=224):
    """--cfg-options that shrink an ImageNet classification config to a tiny run."""
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'train_dataloader.batch_size={batch_size}',
        f'val_dataloader.batch_size={batch_size}',
        f'test_dataloader.batch_size={batch_size}',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'test_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
        'test_dataloader.persistent_workers=False',
        f'model.head.num_classes={num_classes}',
        f'data_preprocessor.num_classes={num_classes}',  # used by mmpretrain's batch augments
        f'train_cfg.max_epochs={epochs}',
        # the recipes' cosine phase starts after the warm-up epochs; start it at 0 here
        'param_scheduler.1.begin=0',
        'default_hooks.logger.interval=1',
        'val_evaluator.topk=1', 'test_evaluator.topk=1',
    ]


def _scene(rng, size, num_classes, num_shapes):
    """A (h, w, 3) image and (h, w) label map of a few coloured rectangles on a background.

    Labels run from 1 to ``num_classes`` (0 is the background / "other")."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    boxes = []
    for _ in range(num_shapes):
        cls = int(rng.integers(1, num_classes + 1))
        bw, bh = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        label[y0:y0 + bh, x0:x0 + bw] = cls
        boxes.append((cls, x0, y0, bw, bh))
    colours = np.array([[(c * 67) % 256, (c * 131) % 256, (c * 197) % 256]
                        for c in range(num_classes + 1)], np.float32)
    img = colours[label] + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), label, boxes


def make_ade20k(root, num_train=4, num_val=2, size=(64, 96), num_classes=150, seed=0):
    """ADE20K layout (ADEChallengeData2016): ``images/{training,validation}/*.jpg`` and
    ``annotations/{training,validation}/*.png`` (uint8 labels, 0 = other, 1..150 = classes,
    as mmseg's ``ADE20KDataset`` with ``reduce_zero_label=True`` reads them). Returns root."""
    rng = np.random.default_rng(seed)
    for split, tag, count in (('training', 'train', num_train), ('validation', 'val', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(count):
            img, label, _ = _scene(rng, size, min(num_classes, 8), num_shapes=3)
            name = f'ADE_{tag}_{i + 1:08d}'
            Image.fromarray(img).save(osp.join(root, 'images', split, name + '.jpg'))
            Image.fromarray(label, mode='L').save(
                osp.join(root, 'annotations', split, name + '.png'))
    return root


# The 80 COCO class names in mmdet's CocoDataset order; the json's category ids are 1..80.
COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')


def make_coco(root, num_train=4, num_val=2, size=(96, 128), num_used_classes=4, seed=0):
    """COCO layout: ``{train2017,val2017}/*.jpg`` and
    ``annotations/instances_{train2017,val2017}.json`` with all 80 categories, and per object
    a box (``bbox`` x, y, w, h) and a polygon (``segmentation``: a rectangle with a corner
    cut off, so masks differ from boxes). Returns root (with a trailing slash, as mmdet's
    configs join paths by string concatenation)."""
    import json
    rng = np.random.default_rng(seed)
    root = root.rstrip('/') + '/'
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='thing')
                  for i, n in enumerate(COCO_CLASSES)]
    ann_id = 1
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(count):
            img_id = len(images) + 1
            img, _, boxes = _scene(rng, size, num_used_classes, num_shapes=2)
            name = f'{img_id + (0 if split == "train2017" else 1000):012d}.jpg'
            Image.fromarray(img).save(osp.join(root, split, name))
            images.append(dict(id=img_id, file_name=name, height=size[0], width=size[1]))
            for cls, x, y, bw, bh in boxes:
                cut = min(bw, bh) // 3
                poly = [x, y, x + bw, y, x + bw, y + bh - cut, x + bw - cut, y + bh, x, y + bh]
                anns.append(dict(id=ann_id, image_id=img_id, category_id=cls,
                                 bbox=[x, y, bw, bh], area=float(bw * bh - cut * cut / 2),
                                 segmentation=[[float(v) for v in poly]], iscrowd=0))
                ann_id += 1
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=categories), f)
    return root


def write_fmnist(folder, n_train=40, n_test=12, gz=True):
    """The four Fashion-MNIST idx files in ``folder``; returns the arrays written."""
    os.makedirs(folder, exist_ok=True)
    data = {}
    for prefix, n, seed in (('train', n_train, 0), ('t10k', n_test, 1)):
        images, labels = fake_fashion_mnist(n, seed)
        write_idx(osp.join(folder, f'{prefix}-images-idx3-ubyte'), images, gz)
        write_idx(osp.join(folder, f'{prefix}-labels-idx1-ubyte'), labels, gz)
        data[prefix] = (images, labels)
    return data


def fake_fashion_mnist(n, seed):
    """Learnable 28x28 images: a bright band whose row depends on the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) * 7 + seed) % 10
    images = rng.integers(0, 60, (n, 28, 28))
    for i, y in enumerate(labels):
        images[i, 2 + 2 * y:5 + 2 * y, 4:24] = 200 + rng.integers(0, 55)
    return images.astype(np.uint8), labels.astype(np.uint8)


# ------------------------------------------------------------------------------------------
# real-format idx files
# ------------------------------------------------------------------------------------------
def write_idx(path, array, gz=False):
    """An idx file: magic 0x0000 08 <ndim>, the dims as big-endian uint32, then uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack('>I', 0x0800 | array.ndim) + struct.pack(f'>{array.ndim}I',
                                                                    *array.shape)
    opener = gzip.open if gz else open
    with opener(path + ('.gz' if gz else ''), 'wb') as f:
        f.write(header + array.tobytes())


SEG_TINY = """
_base_ = {base!r}
data_root = {data_root!r}
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size),
             backbone=dict(init_cfg=dict(checkpoint={ckpt!r}, prefix={prefix!r})))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, save_optimizer=False),
                     visualization=dict(draw=False))
randomness = dict(seed=0)
"""


DET_TINY = """
_base_ = {base!r}
data_root = {data_root!r}
model = dict(backbone=dict(init_cfg=dict(checkpoint={ckpt!r}, prefix={prefix!r})),
             # fewer proposals/RoIs on 2 CPU cores; score_thr 0: an untrained model detects
             train_cfg=dict(rpn_proposal=dict(max_per_img=200), rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(score_thr=0.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(save_optimizer=False),
                     visualization=dict(draw=False))
randomness = dict(seed=0)
"""
