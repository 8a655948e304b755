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
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..checkpoint.fit import (backbone_load_report, check_pretrained_backbone,  # noqa: F401
                             unwrap_model)
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


def _wheel_key():
    import sys

    import mmcv
    torch_v = torch.__version__.split('+')[0]
    return (f'mmcv-{mmcv.__version__}_torch-{torch_v}_cu{torch.version.cuda}_'
            f'py{sys.version_info[0]}{sys.version_info[1]}')


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
        'would fail. Rebuild mmcv with CUDA ops on this machine (needs nvcc): '
        f'`rm -rf ~/.cache/mmtlalign/wheels/{_wheel_key()} .venv/.mmtlalign-setup && '
        'FORCE_CUDA=1 bash tools/setup_env.sh`. To run on the CPU instead, set '
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
