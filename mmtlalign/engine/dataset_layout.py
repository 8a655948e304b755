"""Folder-layout mistakes of image-classification datasets, named in one line before training.

mmpretrain's ``ImageNet`` and ``CustomDataset`` without an annotation file scan
``data_root/data_prefix`` for class sub-folders. A layout mistake surfaces deep inside the
Runner as a raw traceback: ``FileNotFoundError`` from ``os.scandir`` (no ``train/`` folder),
``AssertionError: The number of subfolders (4) doesn't match the number of specified classes
(1000)`` (an ``ImageNet`` config on another folder), ``RuntimeError: Found 0 files`` (images
not in class folders). :func:`check_dataset_layout` looks at the folders first (directory
listings only, no image is read) and raises :class:`UserInputError` naming the folder and the
fix. Annotation files and the images they list are checked by ``check_data_roots`` and
:class:`DataCheckHook`; empty class folders by :class:`DataCheckHook`.
"""
import os
import os.path as osp

from ..errors import UserInputError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
FOLDER_TYPES = ('ImageNet', 'CustomDataset')
IMAGENET_CLASSES = 1000


def _datasets(dataset_cfg):
    """The dataset configs inside (possibly wrapped) dataset configs."""
    if not isinstance(dataset_cfg, dict):
        return
    yield dataset_cfg
    for key in ('dataset', 'datasets'):
        inner = dataset_cfg.get(key)
        for d in inner if isinstance(inner, (list, tuple)) else [inner]:
            yield from _datasets(d)


def _has_image(folder):
    """Whether ``folder`` holds an image file at any depth (stops at the first)."""
    for _, _, files in os.walk(folder):
        if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
            return True
    return False


def _scanned_folder(ds):
    """(folder, prefix) the dataset scans for class folders, or None when it reads an
    annotation file (or is no folder dataset)."""
    kind = str(ds.get('type', '')).split('.')[-1]
    root = ds.get('data_root') or ''
    if kind not in FOLDER_TYPES or not root or not osp.isdir(root):
        return None  # a missing data_root is check_data_roots' one-line error
    prefix = ds.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path') or prefix.get('img') or ''
    split = ds.get('split') or ''
    if kind == 'ImageNet' and split:
        prefix = prefix or split
        if not ds.get('ann_file') and osp.isfile(osp.join(root, 'meta', f'{split}.txt')):
            return None
    if ds.get('ann_file'):
        return None
    return osp.join(root, prefix), prefix


def check_dataset_layout(cfg, loaders):
    """Raise :class:`UserInputError` for a folder dataset of ``cfg``'s ``loaders`` whose
    layout cannot be read as ``<data_root>/<prefix>/<class>/<image>``."""
    for loader in loaders:
        if cfg.get(loader) is None:
            continue
        for ds in _datasets(cfg[loader].get('dataset')):
            found = _scanned_folder(ds)
            if found is not None:
                _check_folder(ds, loader, *found)


def _check_folder(ds, loader, folder, prefix):
    root = ds['data_root']
    layout = f'{root}/{prefix + "/" if prefix else ""}<class>/<image>'
    if not osp.isdir(folder):
        here = ''
        if any(osp.isdir(osp.join(root, d)) and _has_image(osp.join(root, d))
               for d in os.listdir(root)):
            here = (f'; {root} itself holds class folders: move them into {folder}, or set '
                    f"{loader}.dataset.data_prefix=''")
        raise UserInputError(
            f'dataset folder {folder!r} ({loader}.dataset: data_root + {prefix!r}) does not '
            f'exist: the expected layout is {layout}, or an annotation file '
            f'(ann_file){here}.')
    classes = sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d)))
    if not classes:
        images = [f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS)]
        what = (f'its {len(images)} images lie directly in it' if images else
                'it holds no class folders')
        raise UserInputError(
            f'dataset folder {folder!r} ({loader}.dataset) has no class sub-folders ({what}): '
            f'put each class in its own folder, {layout}, or list the images with their '
            f'labels in an annotation file ({loader}.dataset.ann_file).')
    kind = str(ds.get('type', '')).split('.')[-1]
    named = ds.get('classes') or (ds.get('metainfo') or {}).get('classes')
    if kind == 'ImageNet' and not named and len(classes) != IMAGENET_CLASSES:
        names = (f'"[{",".join(classes)}]"' if len(classes) <= 10 else
                 f'"[...]" (its {len(classes)} folder names)')
        raise UserInputError(
            f'{folder!r} ({loader}.dataset) has {len(classes)} class folders, but '
            f"type='ImageNet' expects the {IMAGENET_CLASSES} ImageNet classes: for your own "
            f'classes name them, e.g. --cfg-options {loader}.dataset.classes={names} '
            f'model.head.num_classes={len(classes)} (or point data_root at ImageNet).')
