"""Does a checkpoint fit a model? Refuse, in one line, weights that would be scored or resumed
half-loaded.

mmengine loads ``load_from`` / ``--resume`` / ``tools/test.py`` checkpoints with
``strict=False``: a checkpoint of another architecture or class count only produces
"do not match exactly" warnings and then a meaningless score (or an optimizer traceback on
resume). :func:`check_checkpoint_fits` loads the checkpoint's ``state_dict`` into the model the
way mmengine does -- the same values mmengine loads right after, so nothing changes when it
fits -- and raises :class:`CheckpointFitError` naming the first missing, unexpected and
mismatched keys and the likely fix. The downstream backbone check
(:func:`check_pretrained_backbone`, below) shares :func:`fit_state_dict`.
"""
import copy
import os.path as osp
import re
from dataclasses import dataclass, field

from ..errors import DownstreamCheckError, UserInputError
from .state_dict import CONVERTER_CLS, CONVERTER_TIMM, strip_module_prefix, unwrap_state_dict

# Parameters that only the training loss uses (never ``predict``): the separate linear token
# head of ``token_loss=dict(head='separate')``. A test may meet them on one side only.
TRAINING_ONLY = {'token_head.': "the separate token head of model.token_loss (head='separate')"}

# Loaded with resizing by the backbones' own load hooks (another resolution or window): only
# their channel / head dimension must agree.
_RESIZABLE = ('pos_embed', 'absolute_pos_embed', 'relative_position_bias_table')


class CheckpointFitError(UserInputError):
    """The checkpoint does not fit the model; the message names the keys and the fix."""


@dataclass
class LoadReport:
    """How a checkpoint's keys meet a module's ``state_dict``.

    ``missing``: module keys the checkpoint lacks; ``unexpected``: checkpoint keys the module
    does not have; ``shape_mismatch``: ``(key, checkpoint shape, module shape)`` after the
    module's own load-time resizing; ``new_output_norms``: (backbones only) output norms of
    feature levels a classifier did not output (fresh, as upstream); ``loaded``: how many
    checkpoint tensors the module takes.
    """
    checkpoint: str
    prefix: str = None
    loaded: int = 0
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    shape_mismatch: list = field(default_factory=list)
    new_output_norms: list = field(default_factory=list)
    hint: str = ''

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.shape_mismatch) and self.loaded > 0

    def summary(self):
        what = f'{self.checkpoint!r}' + (f' (prefix {self.prefix!r})' if self.prefix else '')
        text = (f'checkpoint {what}: {self.loaded} tensors loaded, '
                f'missing: {few(self.missing) or "none"}, '
                f'unexpected: {few(self.unexpected) or "none"}')
        if self.shape_mismatch:
            text += ', shape mismatch: ' + few(
                [f'{k} {tuple(a)} vs {tuple(b)}' for k, a, b in self.shape_mismatch])
        if self.new_output_norms:
            text += (f'; new output norms (trained from scratch, as in upstream configs): '
                     f'{few(self.new_output_norms, 8)}')
        return text


def few(keys, n=6):
    """The first ``n`` keys, comma-separated, with a count of the rest."""
    keys = list(keys)
    if not keys:
        return ''
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def fit_state_dict(module, source, report):
    """Load ``source`` into ``module`` (``strict=False``, shape-mismatched keys left out) and
    record what did not fit in ``report``.

    Returns:
        list[str]: the module keys the checkpoint lacks (``report.missing`` is left to the
        caller, which may set some aside); ``None`` when loading itself failed
        (``report.hint`` says why).
    """
    own = module.state_dict()
    for k, v in source.items():
        if k not in own or tuple(v.shape) == tuple(own[k].shape):
            continue
        if k.endswith(_RESIZABLE) and v.dim() == own[k].dim() and v.shape[-1] == own[k].shape[-1]:
            continue
        if k.endswith('relative_position_index'):
            continue  # rebuilt with the table
        report.shape_mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
    mismatched = {k for k, _, _ in report.shape_mismatch}
    loadable = {k: v for k, v in source.items() if k not in mismatched}
    try:
        result = module.load_state_dict(loadable, strict=False)
    except RuntimeError as e:  # a load-time resize could not adapt a shape
        report.shape_mismatch.append(('<load>', (), ()))
        report.hint = f'Loading failed: {" ".join(str(e).split())[:500]}'
        return None
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len([k for k in loadable if k not in report.unexpected])
    return [k for k in result.missing_keys if k not in mismatched]


def architecture_hint(keys, own_keys, what='model'):
    """A sentence when checkpoint and model are different families (ViT/DeiT vs Swin)."""
    def family(names):
        names = [k.split('backbone.', 1)[-1] for k in names]
        if any(k.startswith('stages.') for k in names):
            return 'Swin'
        if any(k.startswith('layers.') for k in names):
            return 'ViT/DeiT'
        return None

    ckpt, model = family(keys), family(own_keys)
    if ckpt and model and ckpt != model:
        return (f'The checkpoint is a {ckpt} but the {what} is a {model}: use a config for the '
                'same architecture as the checkpoint.')
    return ''


def training_only(keys):
    """The keys among ``keys`` that only a training loss uses (:data:`TRAINING_ONLY`)."""
    return [k for k in keys if k.startswith(tuple(TRAINING_ONLY))]


def _training_only_what(keys):
    return '; '.join(what for prefix, what in TRAINING_ONLY.items()
                     if any(k.startswith(prefix) for k in keys))


def _model_hint(report, sd, meta, model):
    from .convert import detect_timm_arch
    keys, own = list(sd), list(model.state_dict())
    extra = training_only(report.unexpected + report.missing)
    if extra and len(extra) == len(report.unexpected) + len(report.missing) and \
            not report.shape_mismatch:
        side = 'the checkpoint has' if training_only(report.unexpected) else 'the model has'
        return (f'Only training-only parameters differ ({side} {_training_only_what(extra)}); '
                'everything else fits. To train on, set the same model.token_loss as the run '
                'that saved it; tools/test.py drops them for testing.')
    made_by = ''
    if isinstance(meta, dict) and isinstance(meta.get('experiment_name'), str):
        made_by = f' (saved by the run {meta["experiment_name"][:120]!r})'
    if detect_timm_arch(sd) is not None:
        return (f'It holds timm-format weights: convert them with `python {CONVERTER_TIMM} '
                'SRC.pth DST.pth` first.')
    if any(k.startswith('backbone.') for k in own) and not any(
            k.startswith('backbone.') for k in keys):
        return ('It is a backbone-only checkpoint (e.g. from ' + CONVERTER_CLS + '): to start '
                'from it, set model.backbone.init_cfg=dict(type=\'Pretrained\', '
                'checkpoint=PATH) instead of load_from/--resume; to test, use the whole '
                'classifier checkpoint.')
    arch = architecture_hint(keys, own)
    if arch:
        return arch
    heads = [(k, a, b) for k, a, b in report.shape_mismatch if k.startswith('head.')]
    if heads and len(heads) == len(report.shape_mismatch) and not report.missing:
        k, a, b = heads[0]
        return (f'The checkpoint\'s head has {a[0]} classes and the config\'s {b[0]}: set '
                f'--cfg-options model.head.num_classes={a[0]} to use it as it is, or fine-tune '
                "from its backbone with model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint=PATH, prefix='backbone.').")
    return ('The checkpoint was made for another architecture, size or head' + made_by
            + ': use the config that trained it (check `arch`, `num_classes`).')


def unwrap_model(model):
    """The model a checkpoint holds: DDP wrappers and test-time-augmentation models removed."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_checkpoint_fits(model, path, role='checkpoint', testing=False):
    """Load ``path`` into ``model`` as mmengine will; raise unless every key fits.

    Args:
        model (nn.Module): the built model (DDP wrappers and test-time-augmentation models
            are unwrapped: the checkpoint holds the inner model).
        path (str): the checkpoint file.
        role (str): how the user gave it, for the message (``'--resume'``, ``'load_from'``).
        testing (bool): the model is only evaluated: training-only parameters
            (:data:`TRAINING_ONLY`, e.g. ``token_head.*``) that one side lacks are left out,
            with a one-line note in the log; every other key must still fit.

    Raises:
        CheckpointFitError: missing / unexpected / shape-mismatched keys.
        CheckpointLoadError: the file cannot be loaded safely.
    """
    from .loader import load_checkpoint_file
    model = unwrap_model(model)
    ckpt = load_checkpoint_file(path, map_location='cpu')
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise CheckpointFitError(f'{role} {path!r} holds no state_dict of weights.')
    sd = strip_module_prefix(sd)
    report = LoadReport(checkpoint=path)
    missing = fit_state_dict(model, sd, report)
    if missing is not None:
        report.missing = missing
    if testing:
        _drop_training_only(report, path)
    if report.ok:
        return report
    if not report.hint:
        report.hint = _model_hint(report, sd, ckpt.get('meta'), model)
    raise CheckpointFitError(f'{role} does not fit {type(model).__name__}: '
                             f'{report.summary()}. {report.hint}')


def _drop_training_only(report, path):
    """Take the training-only keys out of ``report`` (testing), noting it in one line."""
    unused, absent = training_only(report.unexpected), training_only(report.missing)
    if not unused and not absent:
        return
    from mmengine.logging import print_log
    report.unexpected = [k for k in report.unexpected if k not in unused]
    report.missing = [k for k in report.missing if k not in absent]
    keys = unused + absent
    side = 'not used' if unused else 'absent from the checkpoint and not needed'
    print_log(f'note: {len(keys)} training-only parameter(s) of {path!r} {side} for testing '
              f'({few(keys, 3)}: {_training_only_what(keys)}); left out.', logger='current')


# ----------------------------------------------------------------------------- backbones
# Output norms of hierarchical backbones (mmpretrain Swin's norm0..norm3): a classifier only
# has the last one; dense-prediction configs add the others, which start from scratch (as in
# mmdet's and mmseg's own Swin configs).
_OUTPUT_NORM = re.compile(r'^norm\d+\.(weight|bias)$')


def _state_dict_of(checkpoint):
    from mmengine.runner.checkpoint import _load_checkpoint
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
    from .convert import detect_timm_arch
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


def check_pretrained_init(backbone):
    """Refuse ``backbone.init_cfg=dict(type='Pretrained', ...)`` unless the checkpoint fits
    (mmengine's ``PretrainedInit`` loads with ``strict=False`` and only warns). Runs once per
    module, before the parent's ``init_weights``; a no-op for every other ``init_cfg``."""
    init_cfg = getattr(backbone, 'init_cfg', None)
    if (getattr(backbone, '_is_init', False) or not isinstance(init_cfg, dict)
            or init_cfg.get('type') != 'Pretrained' or not init_cfg.get('checkpoint')):
        return None
    return check_pretrained_backbone(backbone, init_cfg['checkpoint'], init_cfg.get('prefix'))
