"""Clear errors for downstream (mmdet / mmseg) runs with TL-Align backbones.

* :func:`~mmtlalign.checkpoint.fit.check_pretrained_backbone`: does a checkpoint fit the
  backbone? mmengine's ``Pretrained`` init loads with ``strict=False`` and only warns, so a
  wrong file (timm keys, a classifier checkpoint without ``prefix='backbone.'``, another
  architecture) would silently leave the backbone random. We fail instead, naming the missing
  and unexpected keys and the converter to use.
* :func:`check_mmcv_cuda_ops`: an mmcv built without CUDA ops (e.g. on a CPU machine, or
  ``mmcv-lite``) cannot run mmdet's RoIAlign / NMS on a GPU; say how to rebuild.
* :class:`DownstreamChecksHook`: runs both in ``before_run``, i.e. before the Runner
  initialises the weights. The downstream configs in ``configs/tlalign/{ade20k,coco}`` enable
  it with ``custom_hooks = [dict(type='DownstreamChecksHook')]``.

A missing dataset folder is caught earlier, by ``tools/train.py`` / ``tools/test.py``
(:func:`mmtlalign.cli.launch.check_data_roots`).
"""
import os.path as osp
import sys

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..checkpoint.fit import (  # noqa: F401  (re-exported)
    backbone_load_report,
    check_pretrained_backbone,
    unwrap_model,
)
from ..errors import DownstreamCheckError


# ----------------------------------------------------------------------------- mmcv ops
def _compiling_cuda_version():
    """mmcv's compile-time CUDA version ('not available' for CPU-only ops); None if mmcv has
    no compiled ops at all."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        return get_compiling_cuda_version()
    except (ImportError, OSError):
        return None


#: written by tools/setup_env.sh next to its stamp: the mmcv wheel-cache key and folder it used
MMCV_RECORD = '.mmtlalign-mmcv'


def mmcv_build_record(prefix=None):
    """``{'MMCV_CACHE_KEY': ..., 'MMCV_WHEEL_DIR': ...}`` that tools/setup_env.sh recorded in
    the environment ``prefix`` (default: this one), or {} when it recorded none. The key is
    computed in one place only, the script; this just reads what it used."""
    path = osp.join(prefix or sys.prefix, MMCV_RECORD)
    try:
        with open(path) as f:
            pairs = (line.strip().split('=', 1) for line in f if '=' in line)
            return {k: v for k, v in pairs}
    except OSError:
        return {}


def rebuild_hint(prefix=None):
    """The command that rebuilds mmcv with CUDA ops in this environment."""
    prefix = prefix or sys.prefix
    wheel_dir = mmcv_build_record(prefix).get('MMCV_WHEEL_DIR')
    stamp = osp.join(prefix, '.mmtlalign-setup')
    if wheel_dir:
        return f'`rm -rf {wheel_dir} {stamp} && FORCE_CUDA=1 bash tools/setup_env.sh`'
    return (f'`rm -f {stamp} && FORCE_CUDA=1 bash tools/setup_env.sh` (this environment has '
            f'no {MMCV_RECORD} record of the cached CPU-ops wheel; `bash tools/setup_env.sh '
            '--print-plan` prints its MMCV_CACHE_KEY, a folder under '
            '~/.cache/mmtlalign/wheels/)')


def check_mmcv_cuda_ops(on_gpu=None):
    """Raise when the run is on a GPU but mmcv's compiled ops are CPU-only (or absent).

    Args:
        on_gpu (bool, optional): whether the model runs on a CUDA device; defaults to
            ``torch.cuda.is_available()``.
    """
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    if not on_gpu:
        return
    version = _compiling_cuda_version()
    if version is not None and version != 'not available':
        return
    what = ('has no compiled ops at all (mmcv-lite, or built with pip\'s build isolation)'
            if version is None else 'was compiled without CUDA ops (mmcv.ops.'
            "get_compiling_cuda_version() == 'not available', e.g. built on a CPU machine)")
    raise DownstreamCheckError(
        f'this run uses the GPU, but mmcv {what}; mmdet/mmseg CUDA kernels (RoIAlign, NMS, ...) '
        f'would fail. Rebuild mmcv with CUDA ops on this machine (needs nvcc): {rebuild_hint()}. '
        'To run on the CPU instead, set '
        'CUDA_VISIBLE_DEVICES="".')


# ----------------------------------------------------------------------------- hook
@HOOKS.register_module()
class DownstreamChecksHook(Hook):
    """Before the Runner initialises weights: check mmcv's CUDA ops and the backbone's
    ``Pretrained`` checkpoint (``init_cfg``), failing with a clear error; log the key report.

    Args:
        check_pretrained (bool): check the backbone's pretrained checkpoint.
        check_ops (bool): check mmcv's compiled CUDA ops when the model is on a GPU.
    """

    priority = 'VERY_HIGH'

    def __init__(self, check_pretrained=True, check_ops=True):
        self.check_pretrained = check_pretrained
        self.check_ops = check_ops

    def before_run(self, runner):
        from mmengine.runner import BaseLoop
        model = unwrap_model(runner.model)
        if self.check_ops:
            param = next(model.parameters(), None)
            check_mmcv_cuda_ops(on_gpu=param is not None and param.is_cuda)
        # Runner.train() builds its loop before `before_run` and initialises the weights after
        # it; test/val runs never load the pretrained backbone, so there is nothing to check.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        backbone = getattr(model, 'backbone', None)
        init_cfg = getattr(backbone, 'init_cfg', None)
        if not (training and self.check_pretrained and isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained' and init_cfg.get('checkpoint')):
            return
        report = check_pretrained_backbone(backbone, init_cfg['checkpoint'],
                                           init_cfg.get('prefix'))
        runner.logger.info('backbone ' + report.summary())
