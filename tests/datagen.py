"""Small datasets written to disk in the real layouts, for tests.

Images are random but structured (a per-class colour plus noise) so that a model can learn a
little, and saved as real image files.
"""
import os
import os.path as osp

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
