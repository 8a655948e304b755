"""``tools/test.py``'s upstream flags ``--show``, ``--show-dir``, ``--wait-time``, ``--interval``
and ``--tta``, with the meaning each task's own ``tools/test.py`` gives them.

The config's ``default_scope`` picks the task, as it picks the registries:

* mmpretrain: ``--show-dir DIR`` sets ``VisualizationHook.out_dir``, one ``<image>_0.png`` per
  sample in ``DIR`` (``--interval N``: every N-th); ``--tta`` without ``tta_model`` /
  ``tta_pipeline`` flips and averages the scores (``AverageClsScoreTTA``).
* mmdet: ``--show-dir DIR`` sets ``DetVisualizationHook.test_out_dir``, the images go to
  ``<work_dir>/<timestamp>/DIR/<image>``; ``--tta`` flips and merges by NMS (``DetTTAModel``,
  IoU 0.5, 100 per image), with a warning. mmdet's TTA has no masks: refused for Mask R-CNN.
* mmseg: ``--show-dir DIR`` sets the visualizer's ``save_dir``, the images go to
  ``DIR/vis_data/vis_image/test_<image>_<iter>.png`` (the hook draws every 50th batch unless
  ``--interval``; the hook reads ``runner.iter``, which builds the training dataloader, so its
  data must exist, as upstream); ``--tta`` needs the config's ``tta_pipeline`` (mmseg's dataset
  configs define one) and wraps the model in ``tta_model`` (``SegTTAModel``).

``--show`` opens a window per image for ``--wait-time`` seconds (all three); without a display
it is refused (use ``--show-dir``). Every refusal is a one-line :class:`UserInputError`.
"""
import os
import sys
from copy import deepcopy
from typing import Optional

from mmengine.config import Config, ConfigDict

from mmtlalign.errors import UserInputError

from .messages import warn

#: the tasks whose upstream ``tools/test.py`` this mirrors
SCOPES = ('mmpretrain', 'mmdet', 'mmseg')

#: test-time-augmentation model types (a config that already uses one needs no ``--tta``)
TTA_MODELS = ('AverageClsScoreTTA', 'DetTTAModel', 'SegTTAModel')


def task_scope(cfg: Config, flag: str) -> str:
    """The config's ``default_scope`` if it is one of :data:`SCOPES`; else a UserInputError."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise UserInputError(
            f'{flag} follows the task of the config\'s default_scope (one of '
            f'{", ".join(SCOPES)}), and this config has default_scope={scope!r}; set '
            "default_scope (e.g. --cfg-options default_scope=mmpretrain) or drop " + flag + '.')
    return scope


def _has_display() -> bool:
    if not sys.platform.startswith('linux'):
        return True  # macOS / Windows always have a window system
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def apply_show(cfg: Config, show: bool = False, show_dir: Optional[str] = None,
               wait_time: float = 2.0, interval: Optional[int] = None) -> None:
    """``--show`` / ``--show-dir``: turn the task's visualization hook on, as upstream does.

    ``interval``: draw every N-th sample (mmpretrain's ``--interval``, default 1); for mmdet and
    mmseg, whose tools have no such flag, it is set on their hook only when given.
    """
    if not show and not show_dir:
        return
    flag = '--show' if show else '--show-dir'
    scope = task_scope(cfg, flag)
    if show and not _has_display():
        raise UserInputError(
            '--show opens a window for every test image and there is no display here '
            '(DISPLAY is not set): use --show-dir DIR to save the drawn images instead.')
    if interval is not None and interval < 1:
        raise UserInputError(f'--interval must be 1 or more, got {interval}.')
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('visualization')
    if not isinstance(hook, dict):
        raise UserInputError(
            f'{flag} draws predictions with the visualization hook, and this config has none '
            "in default_hooks: add default_hooks = dict(visualization=dict(type="
            f"'{_HOOK_TYPES[scope]}')) to the config.")
    if scope == 'mmpretrain':
        hook.update(enable=True, show=show, wait_time=wait_time, interval=interval or 1)
        hook.out_dir = show_dir
    else:  # mmdet and mmseg: draw=True
        hook.draw = True
        if interval is not None:
            hook.interval = interval
        if show:
            hook.update(show=True, wait_time=wait_time)
        if show_dir and scope == 'mmdet':
            hook.test_out_dir = show_dir
        elif show_dir:  # mmseg: the images go through the visualizer's local backend
            if cfg.get('visualizer') is None:
                cfg.visualizer = ConfigDict(type='SegLocalVisualizer',
                                            vis_backends=[dict(type='LocalVisBackend')],
                                            name='visualizer')
            cfg.visualizer.save_dir = show_dir


_HOOK_TYPES = dict(mmpretrain='VisualizationHook', mmdet='DetVisualizationHook',
                   mmseg='SegVisualizationHook')


def _innermost_dataset(dataset_cfg):
    while isinstance(dataset_cfg, dict) and isinstance(dataset_cfg.get('dataset'), dict):
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def apply_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in the config's ``tta_model`` and test with ``tta_pipeline``;
    where the config has neither, use the task's upstream default (see the module docstring).
    """
    scope = task_scope(cfg, '--tta')
    model_type = str(cfg.model.get('type', ''))
    if model_type.split('.')[-1] in TTA_MODELS or 'module' in cfg.model:
        raise UserInputError(
            f'this config already tests with test-time augmentation (model.type='
            f'{model_type}); drop --tta, or pass the single-scale config with --tta.')
    roi_head = cfg.model.get('roi_head') or {}
    if scope == 'mmdet' and isinstance(roi_head, dict) and roi_head.get('mask_head'):
        raise UserInputError(
            "--tta: mmdet's test-time augmentation (DetTTAModel) merges boxes only, and this "
            'model predicts masks (model.roi_head.mask_head), which mmdet 3.x does not support '
            '("TTA of instance segmentation does not support now"): test without --tta, or '
            'without the mask head (model.roi_head.mask_head=None, test_evaluator.metric=bbox).')
    test_loader = cfg.get('test_dataloader')
    if not test_loader or not isinstance(test_loader.get('dataset'), dict):
        raise UserInputError('--tta needs test_dataloader.dataset in the config.')
    if 'tta_pipeline' not in cfg:
        if scope == 'mmseg':
            raise UserInputError(
                '--tta needs tta_pipeline in the config (mmseg\'s dataset configs, e.g. '
                "'mmseg::_base_/datasets/ade20k.py', define one: multi-scale resize and flip); "
                'inherit one or define it.')
        pipeline = _innermost_dataset(test_loader.dataset).get('pipeline')
        if not pipeline:
            raise UserInputError('--tta needs test_dataloader.dataset.pipeline in the config.')
        tta_pipeline = deepcopy(list(pipeline))
        if scope == 'mmpretrain':
            pack = [tta_pipeline[-1]]
        else:  # mmdet, as its tools/test.py
            warn('the config has no tta_pipeline; --tta uses horizontal flip (as mmdet\'s '
                 'tools/test.py does).')
            pack = [dict(type='PackDetInputs',
                         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                    'scale_factor', 'flip', 'flip_direction'))]
        tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                        pack])
        cfg.tta_pipeline = tta_pipeline
    if 'tta_model' not in cfg:
        if scope == 'mmpretrain':
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        elif scope == 'mmdet':
            warn('the config has no tta_model; --tta merges the flipped predictions with NMS '
                 '(DetTTAModel, IoU 0.5, 100 per image, as mmdet\'s tools/test.py does).')
            cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        else:
            cfg.tta_model = dict(type='SegTTAModel')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
