"""Clear errors for downstream (mmdet / mmseg) runs with TL-Align backbones.

* :func:`backbone_load_report` / :func:`check_pretrained_backbone`: does a checkpoint fit the
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
(:func:`mmtlalign.utils.launch.check_data_roots`).
"""
import copy
import os.path as osp
import re

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..errors import UserInputError
from .checkpoint_fit import (CONVERTER_CLS, CONVERTER_TIMM, LoadReport, architecture_hint,
                             few, fit_state_dict)

# Output norms of hierarchical backbones (mmpretrain Swin's norm0..norm3): a classifier only
# has the last one; dense-prediction configs add the others, which start from scratch (as in
# mmdet's and mmseg's own Swin configs).
_OUTPUT_NORM = re.compile(r'^norm\d+\.(weight|bias)$')


class DownstreamCheckError(UserInputError):
    """A downstream run cannot work as configured; the message says why and what to do."""


def _state_dict_of(checkpoint):
    from mmengine.runner.checkpoint import _load_checkpoint
    from mmtlalign.converters import unwrap_state_dict
    if isinstance(checkpoint, str):
        if not osp.isfile(checkpoint) and '://' not in checkpoint:
            raise DownstreamCheckError(
                f'pretrained checkpoint {checkpoint!r} (model.backbone.init_cfg.checkpoint) does '
                'not exist. Train a TL-Align classifier first (tools/train.py '
                'configs/tlalign/...) or convert released weights, then pass it with '
                '--cfg-options model.backbone.init_cfg.checkpoint=PATH.')
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    else:
        ckpt = checkpoint
    return unwrap_state_dict(ckpt)


def _diagnose(sd, prefix, backbone):
    """A sentence on what the checkpoint looks like and which tool or setting fits."""
    from mmtlalign.converters import detect_timm_arch
    keys = list(sd)
    timm = detect_timm_arch(sd)
    if timm is not None:
        return (f'The checkpoint has timm-format {timm} keys ({", ".join(keys[:3])}, ...): '
                'convert it with '
                f'`python {CONVERTER_TIMM} SRC.pth DST.pth` and load DST.pth with '
                "prefix='backbone.'.")
    has_backbone = any(k.startswith('backbone.') for k in keys)
    if prefix and not any(k.startswith(prefix) for k in keys):
        return (f'The checkpoint has no {prefix!r} keys: it is a backbone-only checkpoint (e.g. '
                f'from {CONVERTER_CLS}); load it without a prefix: '
                "init_cfg=dict(type='Pretrained', checkpoint=...).")
    if not prefix and has_backbone:
        return ("The checkpoint is a whole classifier (keys 'backbone.*', 'head.*'): set "
                "init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.'), or "
                f'extract the backbone with `python {CONVERTER_CLS} SRC.pth DST.pth`.')
    if prefix:
        keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    arch = architecture_hint(keys, list(backbone.state_dict()), 'backbone')
    if arch:
        return arch
    return ('The checkpoint was made for another architecture or size (check `arch`), or by '
            "another toolbox (mmseg/mmdet's own ViT use different keys than mmpretrain's): "
            f'mmtlalign backbones take mmpretrain checkpoints ({CONVERTER_TIMM} converts timm).')


def backbone_load_report(backbone, checkpoint, prefix=None):
    """Load ``checkpoint`` into a copy of ``backbone`` the way ``Pretrained`` init does and report.

    Args:
        backbone (nn.Module): the built backbone (not modified).
        checkpoint (str | dict): a path (or an already loaded checkpoint).
        prefix (str, optional): as ``init_cfg.prefix`` (e.g. ``'backbone.'``).

    Returns:
        LoadReport
    """
    name = checkpoint if isinstance(checkpoint, str) else '<checkpoint>'
    if prefix and not prefix.endswith('.'):
        prefix += '.'  # as mmengine's _load_checkpoint_with_prefix
    sd = _state_dict_of(checkpoint)
    report = LoadReport(checkpoint=name, prefix=prefix)
    source = sd
    if prefix:
        source = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    missing = fit_state_dict(copy.deepcopy(backbone).cpu(), source, report)
    if missing is None:
        return report
    for k in missing:
        (report.new_output_norms if _OUTPUT_NORM.match(k) else report.missing).append(k)
    # a checkpoint with none of the norms that the backbone outputs is no classifier of it
    if report.new_output_norms and report.loaded == 0:
        report.missing += report.new_output_norms
        report.new_output_norms = []
    if not report.ok:
        report.hint = _diagnose(sd, prefix, backbone)
    return report


def check_pretrained_backbone(backbone, checkpoint, prefix=None):
    """:func:`backbone_load_report`, raising :class:`DownstreamCheckError` unless it fits."""
    report = backbone_load_report(backbone, checkpoint, prefix)
    if not report.ok:
        raise DownstreamCheckError(
            f'the pretrained checkpoint does not fit {type(backbone).__name__}: backbone '
            f'{report.summary()}. {report.hint}')
    return report


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
def _unwrap(model):
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


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
        model = _unwrap(runner.model)
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
