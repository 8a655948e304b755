"""Bad data: clear errors naming the file, or logged skips where asked for.

Without these checks, in mmengine/mmpretrain:

- an annotation file that lists a missing image fails only when the sample is reached (possibly
  hours into a run), inside a data-loader worker;
- a truncated JPEG is decoded silently by OpenCV (the default decoder) with the missing part
  filled in grey, and trains;
- a class folder without images (folder-scan datasets, no annotation file) only logs a warning:
  the class keeps its label index but has no training data;
- a decompression bomb (a small PNG or JPEG whose header claims e.g. 60000x60000 pixels) is
  decoded in full: OpenCV allows up to 2^30 pixels (3 GiB as BGR) per image and data-loader
  worker; Pillow only warns below twice its ``Image.MAX_IMAGE_PIXELS``.

:class:`DataCheckHook` (enabled in the TL-Align configs) checks, before the first iteration, that
every image the datasets list exists and that no class folder is empty, and replaces mmcv's
``LoadImageFromFile`` in the dataset pipelines with :class:`CheckedLoadImageFromFile`, which
rejects truncated, undecodable and oversized images by name (the size read from the image's
header before decoding, for every decoder backend). With ``on_error='skip'`` problems are logged
and the samples skipped (mmengine then draws another sample in their place) instead of raised.
"""
import io
import logging
import os.path as osp
import warnings

import mmcv
import mmengine.fileio as fileio
from mmcv.transforms import LoadImageFromFile
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS, TRANSFORMS
from PIL import Image

from ._loader import restart_train_iterator

ON_ERROR = ('raise', 'skip')
JPEG_SOI, JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
PNG_SIGNATURE, PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND'
#: the most pixels an image may have: Pillow's default ``Image.MAX_IMAGE_PIXELS`` (0.25 GiB as
#: RGB; ImageNet's largest images have ~30 million), here an error rather than a warning
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class DataError(Exception):
    """Bad training data; the message names the file or folder. (A single-string constructor,
    so that PyTorch can re-raise it from a data-loader worker.)"""


def image_bytes_problem(data):
    """Why these image bytes are unusable (empty, truncated), or None. Cheap: no decoding.

    A complete JPEG always ends its scan with an EOI marker, and ``FF D9`` cannot occur inside
    entropy-coded data (byte stuffing), so a JPEG without it was cut off; likewise a PNG
    without its ``IEND`` chunk.
    """
    if len(data) == 0:
        return 'empty image file'
    if data[:2] == JPEG_SOI and data.rfind(JPEG_EOI) == -1:
        return f'truncated JPEG image (no end-of-image marker after {len(data)} bytes)'
    if data[:8] == PNG_SIGNATURE and data.rfind(PNG_END) == -1:
        return f'truncated PNG image (no IEND chunk after {len(data)} bytes)'
    return None


def image_size_problem(data, max_pixels=MAX_IMAGE_PIXELS):
    """Why these image bytes would decode to more than ``max_pixels`` pixels (a decompression
    bomb), or None. Reads the header only (Pillow's lazy open), whatever decoder follows;
    formats Pillow does not know are left to the decoder (OpenCV caps them at 2^30 pixels).
    Beyond twice Pillow's own ``Image.MAX_IMAGE_PIXELS`` Pillow refuses to open the file at all:
    raise that too for such images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as e:
        return f'image too large to decode ({e})'
    except Exception:  # noqa: BLE001  (not an image Pillow knows: the decoder will tell)
        return None
    if max_pixels is not None and width * height > max_pixels:
        return (f'image too large to decode: {width}x{height} = {width * height} pixels, over '
                f'the limit of {max_pixels} (a decompression bomb? if genuine, raise max_pixels '
                'of DataCheckHook)')
    return None


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that names the file of a missing, empty, truncated,
    undecodable or oversized image, and raises :class:`DataError` or (``on_error='skip'``) logs
    it and returns None, which makes mmengine's dataset load another sample instead.

    Args:
        on_error (str): ``'raise'`` or ``'skip'``.
        max_pixels (int, optional): refuse images with more pixels (width x height, read from
            the header before decoding); None: no limit of ours.
        **kwargs: those of ``LoadImageFromFile``.
    """

    def __init__(self, on_error='raise', max_pixels=MAX_IMAGE_PIXELS, **kwargs):
        if on_error not in ON_ERROR:
            raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
        super().__init__(**kwargs)
        self.on_error = on_error
        self.max_pixels = max_pixels

    @classmethod
    def from_loader(cls, loader, on_error='raise', max_pixels=MAX_IMAGE_PIXELS):
        """The checked version of an existing ``LoadImageFromFile`` (same settings)."""
        new = cls.__new__(cls)
        new.__dict__.update(loader.__dict__)
        new.on_error = on_error
        new.max_pixels = max_pixels
        return new

    def _bad(self, filename, reason):
        if self.on_error == 'skip':
            print_log(f'Skipping image {filename}: {reason}.', logger='current',
                      level=logging.WARNING)
            return None
        raise DataError(f'{reason}: {filename} (remove or replace the file, fix the annotation '
                        'file, or skip bad images with custom_hooks '
                        "DataCheckHook(on_error='skip'))")

    def transform(self, results):
        filename = results['img_path']
        try:
            if self.file_client_args is not None:
                client = fileio.FileClient.infer_client(self.file_client_args, filename)
                img_bytes = client.get(filename)
            else:
                img_bytes = fileio.get(filename, backend_args=self.backend_args)
        except FileNotFoundError:
            return self._bad(filename, 'image file does not exist')
        except OSError as e:
            return self._bad(filename, f'cannot read image file ({e.strerror or e})')
        problem = (image_bytes_problem(img_bytes)
                   or image_size_problem(img_bytes, self.max_pixels))
        if problem:
            return self._bad(filename, problem)
        try:
            img = mmcv.imfrombytes(img_bytes, flag=self.color_type,
                                   backend=self.imdecode_backend)
        except Exception as e:  # noqa: BLE001  (decoders raise many types)
            return self._bad(filename, f'corrupt image, cannot decode it ({type(e).__name__}: {e})')
        if img is None:
            return self._bad(filename, 'corrupt image, cannot decode it')
        if self.to_float32:
            img = img.astype('float32')
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self):
        return (super().__repr__()[:-1]
                + f", on_error='{self.on_error}', max_pixels={self.max_pixels})")


def checked_pipeline(pipeline):
    """``pipeline`` (transform configs) with mmcv's plain ``LoadImageFromFile`` made
    :class:`CheckedLoadImageFromFile`, its settings kept: for the loaders built without a
    Runner, where no :class:`DataCheckHook` swaps it (the evaluation stages)."""
    plain = ('LoadImageFromFile', 'mmcv.LoadImageFromFile', LoadImageFromFile)
    return [dict(t, type='CheckedLoadImageFromFile')
            if isinstance(t, dict) and t.get('type') in plain else t for t in pipeline or []]


def _leaf_datasets(dataset):
    """The datasets inside dataset wrappers (Concat/Repeat/ClassBalanced...)."""
    inner = getattr(dataset, 'datasets', None)
    if inner is not None:
        for d in inner:
            yield from _leaf_datasets(d)
        return
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:
        yield from _leaf_datasets(inner)
        return
    yield dataset


def _is_local(path):
    return '://' not in str(path)


def dataset_problems(dataset, rank=0, world_size=1):
    """Empty class folders and missing image files of a (mmengine-style) dataset.

    Returns a list of ``(kind, path)``: ``('empty class folder', folder)`` or
    ``('missing image', path)``. With ``world_size > 1`` only every ``world_size``-th image,
    from ``rank``, is checked for existence (each process checks its share).
    """
    problems = []
    if not hasattr(dataset, 'get_data_info'):
        return problems
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    folder_to_idx = getattr(dataset, 'folder_to_idx', None)
    folder_scan = bool(folder_to_idx) and not getattr(dataset, 'ann_file', None)
    indices = range(len(dataset)) if folder_scan else range(rank, len(dataset), world_size)
    infos = [dataset.get_data_info(i) for i in indices]
    if folder_scan and rank == 0:
        labels = {int(info['gt_label']) for info in infos if 'gt_label' in info}
        prefix = getattr(dataset, 'img_prefix', '')
        for folder, idx in sorted(folder_to_idx.items(), key=lambda kv: kv[1]):
            if idx not in labels:
                problems.append(('empty class folder', osp.join(prefix, folder)))
    if folder_scan:  # found by listing the folders: they exist; split the stat calls anyway
        infos = infos[rank::world_size]
    for info in infos:
        path = info.get('img_path')
        if isinstance(path, str) and _is_local(path) and not osp.isfile(path):
            problems.append(('missing image', path))
    return problems


@HOOKS.register_module()
class DataCheckHook(Hook):
    """Check the datasets before the run starts and guard image loading.

    Before the run: every image listed by the train/val/test datasets must exist (one ``stat``
    per image, split over the processes: seconds for ImageNet on a local disk), and no class
    folder may be empty. In the
    pipelines: ``LoadImageFromFile`` becomes :class:`CheckedLoadImageFromFile` (truncated and
    undecodable images are named, and images over ``max_pixels`` refused from their header;
    costs one byte search and one header parse per image).

    Args:
        on_error (str): ``'raise'`` (default): stop with :class:`DataError` naming the file or
            folder. ``'skip'``: log each problem and skip the sample (mmengine loads a random
            other sample in its place; a class folder without images stays without them).
        check_files (bool): the existence and empty-folder checks before the run.
        check_images (bool): replace ``LoadImageFromFile`` with the checked loader.
        max_pixels (int, optional): the checked loader's limit on width x height (default:
            Pillow's default ``MAX_IMAGE_PIXELS``, 89.5 million); None: none of ours.
    """
    priority = 'VERY_HIGH'

    def __init__(self, on_error='raise', check_files=True, check_images=True, max_listed=5,
                 max_pixels=MAX_IMAGE_PIXELS):
        if on_error not in ON_ERROR:
            raise ValueError(f'DataCheckHook on_error must be one of {ON_ERROR}, '
                             f'got {on_error!r}')
        self.on_error = on_error
        self.check_files = check_files
        self.check_images = check_images
        self.max_listed = max_listed
        self.max_pixels = max_pixels

    def _loops(self, runner):
        from mmengine.runner.base_loop import BaseLoop
        for key in ('_train_loop', '_val_loop', '_test_loop'):
            loop = getattr(runner, key, None)
            if isinstance(loop, BaseLoop):
                yield key.strip('_').replace('_loop', '_dataloader'), loop

    def before_run(self, runner):
        for name, loop in self._loops(runner):
            for dataset in _leaf_datasets(loop.dataloader.dataset):
                if self.check_files:
                    self._check_files(runner, name, dataset)
                if (self.check_images and self._guard_pipeline(dataset)
                        and name == 'train_dataloader' and loop.dataloader.num_workers > 0):
                    # IterBasedTrainLoop's workers started with copies of the old pipeline
                    restart_train_iterator(loop)

    def _check_files(self, runner, name, dataset):
        world_size = get_world_size()
        problems = dataset_problems(dataset, get_rank(), world_size)
        if world_size > 1:  # every process checked a share; all decide on the union
            problems = [p for share in all_gather_object(problems) for p in share]
        if not problems:
            return
        ann = getattr(dataset, 'ann_file', '') or ''
        source = f' listed in {ann}' if ann else ''
        kinds = sorted({kind for kind, _ in problems})
        lines = [f'{kind}: {path}' for kind, path in problems[:self.max_listed]]
        more = len(problems) - len(lines)
        summary = (f'{name}: {len(problems)} problem(s) with the data of '
                   f'{type(dataset).__name__}{source} ({", ".join(kinds)}):\n  '
                   + '\n  '.join(lines) + (f'\n  ... and {more} more' if more > 0 else ''))
        if self.on_error == 'skip':
            runner.logger.warning(summary + '\nThese samples are skipped (on_error=\'skip\').')
            return
        raise DataError(summary + '\nFix the data or the annotation file, or skip such samples '
                        "with custom_hooks DataCheckHook(on_error='skip').")

    def _guard_pipeline(self, dataset):
        """Swap plain ``LoadImageFromFile`` for the checked one; True if anything changed."""
        transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None)
        changed = False
        for i, t in enumerate(transforms or []):
            if type(t) is LoadImageFromFile:
                transforms[i] = CheckedLoadImageFromFile.from_loader(t, self.on_error,
                                                                     self.max_pixels)
                changed = True
            elif isinstance(t, CheckedLoadImageFromFile) and (
                    (t.on_error, t.max_pixels) != (self.on_error, self.max_pixels)):
                t.on_error, t.max_pixels = self.on_error, self.max_pixels
                changed = True
        return changed
