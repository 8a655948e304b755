"""The COCO annotation files of a config against the classes in effect, before any training.

mmdet matches a COCO json to the dataset's classes *by name* (``metainfo.classes``, else the
dataset class's own ``METAINFO``, e.g. ``CocoDataset``'s 80 names) and drops, silently, every
class the file lacks and every annotation of another category. What follows is far from the
cause: a whole epoch trains, then ``CocoMetric`` fails with a bare ``IndexError`` (a label beyond
the categories it found), or an empty training set fails with ``need at least one array to
concatenate``. :func:`check_coco_classes` names the problem and the fix instead.
"""
import json
import os.path as osp
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.registry import DATASETS

from mmtlalign.errors import UserInputError

from .dataset_configs import annotation_path, dataset_configs


def _few(names: Iterable, n: int = 5) -> str:
    names = list(names)
    text = ', '.join(map(repr, names[:n]))
    return text + (f', ... ({len(names)} in all)' if len(names) > n else '')


def _mib(n: int) -> str:
    return f'{n / 2 ** 20:.0f} MiB'


def memory_available() -> Optional[int]:
    """Bytes of memory the kernel says are available now (``MemAvailable``), None where
    /proc/meminfo does not tell."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def json_memory_estimate(path: str) -> int:
    """Bytes that ``json.load`` of ``path`` needs at most, about: the text (twice: bytes and
    decoded str) plus a Python object per value (~40 bytes per comma) and per container (~180
    bytes per ``{``/``[``, a small dict's size). Measured (tracemalloc peak): a COCO-like file
    needs 4.9x its size (estimated 7.1x), ``[{"a": 1000}, ...]`` 21x (22x), ``[{}, {}, ...]``
    25x (75x). One pass of byte counts, no parse."""
    size = commas = containers = 0
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 24), b''):
            size += len(chunk)
            commas += chunk.count(b',')
            containers += chunk.count(b'{') + chunk.count(b'[')
    return 2 * size + 40 * commas + 180 * containers


def _read_coco(path: str, loader: str) -> Optional[dict]:
    """The parsed json, or None when it is not a COCO instances file (no ``categories``).

    A file whose parse would not fit in the available memory, or nested deeper than Python's
    recursion limit (a json "recursion bomb"), is refused in one line instead of an OOM kill or
    a ``RecursionError`` traceback (mmdet's own load of the file would fail the same way).
    """
    where = f'annotation file {path!r} ({loader}.dataset.ann_file)'
    try:
        need, available = json_memory_estimate(path), memory_available()
        with open(path) as f:
            if available is not None and need > available:
                raise MemoryError  # before the parse: the same error as one during it
            coco = json.load(f)
    except MemoryError:
        raise UserInputError(
            f'{where}: parsing its {_mib(osp.getsize(path))} of json would need about '
            f'{_mib(need)} of memory, and {_mib(available or 0)} is available; check that it '
            'is the annotation file meant, or free memory.') from None
    except RecursionError:
        raise UserInputError(
            f'{where} is nested deeper than any COCO json (over {sys.getrecursionlimit()} '
            'levels of [ and {): not an annotation file; regenerate it.') from None
    except (OSError, ValueError) as e:
        raise UserInputError(f'{where} is not a readable COCO json: {e}') from None
    if not isinstance(coco, dict) or not isinstance(coco.get('categories'), list):
        return None
    return coco


def default_classes(cfg: Config, ds: dict) -> Tuple[Optional[Sequence[str]], str]:
    """(class names, where they come from) of a dataset config that sets no
    ``metainfo.classes``: its dataset class's ``METAINFO``, found in the config's scope."""
    kind = ds.get('type')
    cls = kind if isinstance(kind, type) else None
    if isinstance(kind, str):
        scope = ds.get('_scope_') or cfg.get('default_scope')
        try:
            with DATASETS.switch_scope_and_registry(scope) as registry:
                cls = registry.get(kind)
        except Exception:  # an unknown scope or type: mmengine names it when it builds
            cls = None
    metainfo = getattr(cls, 'METAINFO', None)
    classes = metainfo.get('classes') if isinstance(metainfo, dict) else None
    name = getattr(cls, '__name__', str(kind))
    return (tuple(classes) if classes else None), f"{name}'s default classes"


def _head_num_classes(model: dict) -> List[Tuple[str, int]]:
    """(config key, num_classes) of the model's box and mask heads (not the class-agnostic
    RPN), e.g. ``('model.roi_head.bbox_head.num_classes', 80)``."""
    if isinstance(model, dict) and isinstance(model.get('module'), dict):  # a TTA wrapper
        return _head_num_classes(model['module'])
    found = []

    def visit(node, key, head=False):
        if isinstance(node, dict):
            if head and isinstance(node.get('num_classes'), int):
                found.append((f'{key}.num_classes', node['num_classes']))
            for k, v in node.items():
                if k != 'rpn_head':
                    visit(v, f'{key}.{k}', k in ('bbox_head', 'mask_head'))
        elif isinstance(node, (list, tuple)):  # cascade heads: one per stage
            for i, v in enumerate(node):
                visit(v, f'{key}.{i}', head)

    visit(model, 'model')
    return found


def check_coco_file(cfg: Config, loader: str, ds: dict, path: str, coco: dict) -> None:
    """One dataset config against its COCO json; see :func:`check_coco_classes`."""
    where = f'{path!r} ({loader}.dataset.ann_file)'
    images = coco.get('images')
    if not isinstance(images, list) or not images:
        raise UserInputError(
            f'annotation file {where} lists no images (its "images" is '
            f'{"empty" if isinstance(images, list) else "missing"}): a COCO instances file '
            'lists every image with its id, file_name, height and width; point ann_file at '
            'the right file or regenerate it.')
    categories = [c for c in coco['categories'] if isinstance(c, dict)]
    names = [c.get('name') for c in categories]
    explicit = (ds.get('metainfo') or {}).get('classes')
    if explicit:
        classes, source = tuple(explicit), f'{loader}.dataset.metainfo.classes'
    else:
        classes, source = default_classes(cfg, ds)
        if classes is None:
            return  # not a dataset class we know the classes of
    absent = [c for c in classes if c not in names]
    if absent:
        if explicit:
            raise UserInputError(
                f'{source} has names that are not categories of {path!r}: {_few(absent)} (the '
                f'file has e.g. {_few(sorted(n for n in names if n))}). Use the annotation '
                "file's category names in metainfo.classes.")
        raise UserInputError(
            f'{loader}.dataset sets no metainfo.classes, so {source} apply ({len(classes)} '
            f'names), and {len(absent)} of them are not categories of {path!r} (e.g. '
            f'{_few(absent, 3)}); the file has {len(names)}: {_few(names)}. Set the file\'s '
            'classes in the config, e.g. metainfo = dict(classes=('
            f'{", ".join(map(repr, names[:3]))}{", ..." if len(names) > 3 else ""})) in every '
            f"dataloader's dataset, and num_classes={len(names)} in the model's box/mask heads.")
    wanted = {c.get('id') for c in categories if c.get('name') in classes}
    annotations = [a for a in coco.get('annotations') or [] if isinstance(a, dict)]
    used = sum(a.get('category_id') in wanted for a in annotations)
    training = not ds.get('test_mode', False)
    if not used and (annotations or training):
        known = {c.get('id') for c in categories}
        ids = sorted({a.get('category_id') for a in annotations}, key=str)
        unknown = [i for i in ids if i not in known]
        what = (f'none of its {len(annotations)} annotations has the category id of one of '
                f'the {len(classes)} classes in effect ({source})' if annotations else
                'it has no annotations, and a training set without any is empty once mmdet '
                'drops the images without objects')
        detail = (f'; category_id {_few(unknown)} {"is" if len(unknown) == 1 else "are"} not '
                  'among its categories' if unknown else
                  f'; the annotations use category ids {_few(ids)}' if ids else '')
        raise UserInputError(
            f'annotation file {where}: {what}{detail}. Fix the category ids of the file (its '
            'categories list id and name of each) or the classes of the config.')
    heads = [(key, n) for key, n in _head_num_classes(cfg.get('model') or {})
             if n != len(classes)]
    if heads and cfg.get('default_scope') == 'mmdet':
        key, n = heads[0]
        raise UserInputError(
            f'{key}={n} but the dataset has {len(classes)} classes ({source}): predictions of '
            f'labels {len(classes)}..{n - 1} would fail COCO evaluation. Set '
            + ' '.join(f'{k}={len(classes)}' for k, _ in heads)
            + ' (--cfg-options or the config).')


def check_coco_classes(cfg: Config, loaders: Sequence[str]) -> None:
    """COCO-style datasets of ``loaders``, before training or testing.

    For every dataset config whose ``ann_file`` is a COCO json (it has a ``categories`` list):

    * the file lists images;
    * every class in effect — ``metainfo.classes``, or the dataset class's default, e.g.
      ``CocoDataset``'s 80 COCO names — is a category of the file (by name, as mmdet matches);
    * some annotation has a category of those classes (always for training sets, which mmdet
      filters down to the images with objects; for test sets when they have annotations);
    * the box/mask heads' ``num_classes`` equal the number of classes (mmdet configs).

    Raises:
        UserInputError: naming the file, the config key and the fix.
    """
    for loader in loaders:
        if cfg.get(loader) is None:
            continue
        for ds in dataset_configs(cfg[loader].get('dataset')):
            path = annotation_path(ds)
            if not path or not str(path).endswith('.json') or not osp.isfile(path):
                continue
            coco = _read_coco(path, loader)
            if coco is not None:
                check_coco_file(cfg, loader, ds, path, coco)
