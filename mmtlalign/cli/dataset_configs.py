"""The dataset configs of a loader and their annotation files, as the config checks of the
tools (:mod:`mmtlalign.cli.launch`, :mod:`mmtlalign.cli.coco_check`) walk them."""
import os.path as osp
from typing import Iterator, Optional


def dataset_configs(dataset_cfg) -> Iterator[dict]:
    """The dataset configs inside (possibly wrapped) dataset configs: ``dataset_cfg`` itself,
    then those under its ``dataset`` / ``datasets`` keys, depth first."""
    if dataset_cfg is None:
        return
    yield dataset_cfg
    for key in ('dataset', 'datasets'):
        inner = dataset_cfg.get(key)
        for d in inner if isinstance(inner, (list, tuple)) else [inner]:
            if isinstance(d, dict):
                yield from dataset_configs(d)


def annotation_path(ds: dict) -> Optional[str]:
    """A dataset config's ``ann_file``, joined onto its ``data_root`` when relative; None
    without one."""
    ann, root = ds.get('ann_file'), ds.get('data_root')
    if not ann:
        return None
    return ann if osp.isabs(ann) or not root else osp.join(root, ann)
