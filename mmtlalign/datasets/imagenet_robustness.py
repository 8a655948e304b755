"""ImageNet robustness sets as mmpretrain datasets, read in the layouts they are published in.

=================  ===============================================  ============  ===========
dataset            layout under ``data_root``                       classes       scored over
=================  ===============================================  ============  ===========
ImageNetV2         ``<0..999>/*.jpeg`` (folders are class indices)  1000          1000 logits
ImageNetA          ``<wnid>/*.jpg`` (200 wnid folders)              200 of 1000   their 200
ImageNetR          ``<wnid>/*.jpg`` (200 wnid folders)              200 of 1000   their 200
ImageNetSketch     ``<wnid>/*.JPEG`` (1000 wnid folders)            1000          1000 logits
ImageNetC          ``<corruption>/<severity>/<wnid>/*.JPEG``        1000          1000 logits
=================  ===============================================  ============  ===========

Every sample's ``gt_label`` is its ImageNet-1k index (0-999), so a 1000-class model's
predictions compare directly. ImageNet-A and -R hold 200 of the classes; the standard protocol
(Hendrycks et al. 2021, both papers' evaluation code) keeps only those 200 logits before the
argmax: their indices are the dataset's ``subset_indices`` (and ``metainfo['subset_indices']``),
which :mod:`mmtlalign.evaluation` applies. ImageNet-C samples carry ``corruption`` and
``severity``.

The class lists are timm's (``timm/data/_info/``: ``imagenet_synsets.txt``, the 1000 wnids in
index order, and ``imagenet_{a,r}_synsets.txt``), read rather than typed in here. A missing or
empty ``data_root`` raises :class:`RobustnessSetMissing` (a :class:`UserInputError`) naming the
set and how to point at it.

The sets are downloaded from third parties, so their images are input: the pipeline's
``LoadImageFromFile`` is made the checked loader of :mod:`mmtlalign.engine.data_checks`
(:func:`~mmtlalign.engine.data_checks.checked_pipeline`), which names a truncated or undecodable
image and refuses a decompression bomb from its header, before any decoder allocates it.
(The evaluation stages build these loaders without a Runner, so no ``DataCheckHook`` is there
to do it.)
"""
import os
import os.path as osp
from functools import lru_cache

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from ..engine.data_checks import checked_pipeline
from ..errors import UserInputError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


class RobustnessSetMissing(UserInputError):
    """The data of a robustness set is not where the config says."""


def _timm_info(name):
    """Lines of timm's class-list file ``name`` (in ``timm/data/_info/``)."""
    try:
        from importlib.resources import files
        text = (files('timm.data') / '_info' / name).read_text()
    except (ImportError, ModuleNotFoundError, FileNotFoundError) as e:
        raise UserInputError(f'the ImageNet robustness sets read their class lists from timm '
                             f'({name}); pip install timm (requirements/tests.txt pins it).'
                             ) from e
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(None)
def imagenet_wnids():
    """The 1000 ImageNet-1k wnids in class-index order."""
    return tuple(_timm_info('imagenet_synsets.txt'))


@lru_cache(None)
def subset_wnids(subset):
    """The 200 wnids of ImageNet-A (``subset='a'``) or ImageNet-R (``'r'``)."""
    return tuple(_timm_info(f'imagenet_{subset}_synsets.txt'))


def subset_indices(subset):
    """ImageNet-1k indices of the 200 classes of ImageNet-A / -R, ascending."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return sorted(index[w] for w in subset_wnids(subset))


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS))


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))


def check_root(name, data_root, hint=''):
    """``data_root`` as an absolute path; :class:`RobustnessSetMissing` if it is not there."""
    root = osp.abspath(osp.expanduser(data_root or ''))
    if not data_root or not osp.isdir(root) or not _class_folders(root):
        raise RobustnessSetMissing(
            f'{name}: no data at {root if data_root else "(no data_root)"}; put the set there '
            f'in its published layout or point data_root at it{hint}.')
    return root


class _ImageNetVariant(BaseDataset):
    """Common part: scan the layout into ``img_path`` / ``gt_label`` (ImageNet-1k index)."""
    NAME = ''
    SUBSET = None  # 'a' / 'r': the set holds 200 classes, scored over those logits only

    def __init__(self, data_root='', pipeline=(), **kwargs):
        self.root = check_root(self.NAME, data_root)
        from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
        metainfo = dict(classes=IMAGENET_CATEGORIES)
        if self.SUBSET:
            metainfo['subset_indices'] = subset_indices(self.SUBSET)
        super().__init__(ann_file='', data_root=self.root, data_prefix='', metainfo=metainfo,
                         pipeline=checked_pipeline(pipeline), test_mode=True, **kwargs)

    @property
    def subset_indices(self):
        return self.metainfo.get('subset_indices')

    def folder_label(self, folder):
        """The ImageNet-1k index of a class folder (a wnid by default)."""
        allowed = subset_wnids(self.SUBSET) if self.SUBSET else imagenet_wnids()
        if folder not in allowed:
            raise UserInputError(
                f'{self.NAME}: folder {osp.join(self.root, folder)!r} is not one of the set\'s '
                f'{len(allowed)} class wnids (e.g. {allowed[0]}); is data_root the right set?')
        return imagenet_wnids().index(folder)

    def scan(self, root, **extra):
        """Data infos of ``root/<class folder>/<image>``."""
        out = []
        for folder in _class_folders(root):
            label = self.folder_label(folder)
            for name in _images(osp.join(root, folder)):
                out.append(dict(img_path=osp.join(root, folder, name), gt_label=label, **extra))
        return out

    def load_data_list(self):
        data = self.scan(self.root)
        if not data:
            raise RobustnessSetMissing(f'{self.NAME}: no images under {self.root}.')
        return data


@DATASETS.register_module()
class ImageNetV2(_ImageNetVariant):
    """ImageNet-V2 (Recht et al. 2019; any of its three sets): folders ``0``..``999``, the
    class indices."""
    NAME = 'ImageNet-V2'

    def folder_label(self, folder):
        if not folder.isdigit() or not 0 <= int(folder) < 1000:
            raise UserInputError(f'{self.NAME}: folder {osp.join(self.root, folder)!r} is not a '
                                 'class index 0-999 (the layout is <data_root>/<index>/*.jpeg).')
        return int(folder)


@DATASETS.register_module()
class ImageNetA(_ImageNetVariant):
    """ImageNet-A (Hendrycks et al. 2021): 7,500 natural adversarial images of 200 classes."""
    NAME = 'ImageNet-A'
    SUBSET = 'a'


@DATASETS.register_module()
class ImageNetR(_ImageNetVariant):
    """ImageNet-R (Hendrycks et al. 2021): 30,000 renditions (art, cartoons, ...) of 200
    classes."""
    NAME = 'ImageNet-R'
    SUBSET = 'r'


@DATASETS.register_module()
class ImageNetSketch(_ImageNetVariant):
    """ImageNet-Sketch (Wang et al. 2019): 50,889 sketches, 1000 wnid folders."""
    NAME = 'ImageNet-Sketch'


@DATASETS.register_module()
class ImageNetC(_ImageNetVariant):
    """ImageNet-C (Hendrycks & Dietterich 2019): ``<corruption>/<severity>/<wnid>/*.JPEG``.

    Args:
        corruptions (list[str], optional): keep these corruption folders (default: all that
            are there).
        severities (list[int], optional): keep these severities (default: all there).
    """
    NAME = 'ImageNet-C'

    def __init__(self, data_root='', corruptions=None, severities=None, **kwargs):
        self.corruptions = list(corruptions) if corruptions else None
        self.severities = [int(s) for s in severities] if severities else None
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self):
        present = _class_folders(self.root)
        wanted = self.corruptions or present
        missing = [c for c in wanted if c not in present]
        if missing:
            raise RobustnessSetMissing(f'{self.NAME}: no folder for corruption(s) '
                                       f'{", ".join(missing)} under {self.root}.')
        data = []
        for corruption in wanted:
            folder = osp.join(self.root, corruption)
            levels = [d for d in _class_folders(folder) if d.isdigit()]
            for level in sorted(levels, key=int):
                if self.severities and int(level) not in self.severities:
                    continue
                data += self.scan(osp.join(folder, level), corruption=corruption,
                                  severity=int(level))
        if not data:
            raise RobustnessSetMissing(f'{self.NAME}: no images under {self.root} (layout '
                                       '<corruption>/<severity>/<wnid>/*.JPEG).')
        return data

    def groups(self):
        """``(corruption, severity)`` of every sample, in index order."""
        return [(self.get_data_info(i)['corruption'], self.get_data_info(i)['severity'])
                for i in range(len(self))]
