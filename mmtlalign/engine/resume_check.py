"""A resumed run takes counters from the checkpoint, not its hyper-parameters.

mmengine's ``Runner.resume`` loads the optimizer with ``optimizer.load_state_dict`` and every
parameter scheduler with ``_ParamScheduler.load_state_dict``, which is
``self.__dict__.update(state)``: every attribute -- ``base_values``, ``eta_min``, ``end``,
``T_max``, ``by_epoch`` -- comes from the file, and a file with 1000x ``base_values`` resumes at
1000x the learning rate, silently. :class:`ResumeCheckHook` compares the file with what the
objects this run built would save, before mmengine loads it:

* schedulers: the same keys; the counters (``last_step``, ``_global_step``, ``_last_value``,
  ...) must have the built ones' types; every other attribute must equal the built one;
* optimizer: the same parameter groups with the same hyper-parameters (the scheduled one may
  differ; the learning rate within a generous bound of what the schedule can reach: a planted
  value inside it passes), and a state for known parameters only, each tensor of the
  parameter's shape or a scalar, of a floating type.

A difference is refused in one line naming the key, both values and how to accept it:
``--cfg-options resume_schedule=config`` keeps the config's hyper-parameters (a longer schedule,
another weight decay) with the file's counters; ``resume_schedule=checkpoint`` takes the file's
(mmengine's own behaviour). Types and shapes are checked in every mode. ``tools/train.py`` adds
the hook to every run (:func:`add_resume_check`).
"""
import copy
import math
import numbers

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..errors import UserInputError

#: scheduler attributes that stepping changes: the only ones a resume takes from the file
COUNTERS = ('last_step', '_global_step', '_last_value', '_step_count', 'last_epoch',
            '_get_lr_called_within_step', 'best', 'num_bad_epochs', 'cooldown_counter')
#: scheduler attributes that only change what is printed
FREE = ('verbose',)
ACCEPT_OPTION = 'resume_schedule'
MODES = ('strict', 'config', 'checkpoint')
ACCEPT = (f'Fix the config to match, or pass --cfg-options {ACCEPT_OPTION}=config (keep the '
          f'config\'s values, counters from the file) or {ACCEPT_OPTION}=checkpoint (the '
          'file\'s values, as plain mmengine).')


class ResumeStateError(UserInputError):
    """A checkpoint's optimizer or scheduler state does not fit the run that resumes it."""


def _refuse(where, what):
    raise ResumeStateError(f'resume: {where} {what}')


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def _same(a, b):
    """Equal plain values; floats to 1e-9 relative (a config's value and its copy)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape
                and bool((a == b).all()))
    return type(a) is type(b) and a == b


def _same_kind(built, saved):
    """``saved`` has the type (and for sequences the length and item kinds) of ``built``."""
    if isinstance(built, bool) or isinstance(saved, bool):
        return isinstance(built, bool) and isinstance(saved, bool)
    if isinstance(built, numbers.Integral):
        return isinstance(saved, numbers.Integral)
    if isinstance(built, numbers.Real):
        return isinstance(saved, numbers.Real) and math.isfinite(saved)
    if isinstance(built, (list, tuple)):
        return (isinstance(saved, (list, tuple)) and len(saved) == len(built)
                and all(_same_kind(b, s) for b, s in zip(built, saved)))
    return type(saved) is type(built)


# ----------------------------------------------------------------------------- schedulers
def check_scheduler(built, saved, where, mode='strict'):
    """Compare one scheduler's saved state with ``built.state_dict()``.

    Args:
        built: the scheduler this run built (fresh: nothing loaded into it yet).
        saved (dict): its state in the checkpoint.
        where (str): ``param_scheduler[i] (Type)``, for the message.
        mode (str): ``'strict'``: hyper-parameters must equal the built ones; ``'config'``:
            the built ones replace them in ``saved``; ``'checkpoint'``: only their kinds are
            checked.

    Raises:
        ResumeStateError: a missing or extra attribute, a counter of the wrong type, or (when
            ``'strict'``) a hyper-parameter that differs from the config.
    """
    ours = built.state_dict()
    if not isinstance(saved, dict):
        _refuse(where, f'is a {type(saved).__name__} in the checkpoint, not a scheduler state '
                f'(the file is damaged or not from this config). Resume from a checkpoint '
                'this config wrote.')
    missing, extra = sorted(set(ours) - set(saved)), sorted(set(saved) - set(ours))
    if missing or extra:
        _refuse(where, f'has attributes {extra} in the checkpoint and lacks {missing}: it '
                'was written for another scheduler type (the config\'s param_scheduler '
                'changed). Resume with the same param_scheduler types, or start from the '
                'weights with load_from instead of --resume.')
    for key, value in ours.items():
        if key in FREE:
            continue
        if key in COUNTERS or mode == 'checkpoint':
            if not _same_kind(value, saved[key]):
                _refuse(where, f'{key} is {_short(saved[key])} in the checkpoint; this '
                        f'scheduler keeps a {type(value).__name__} there (the file is '
                        'damaged or was edited). Resume from a checkpoint this config wrote.')
        elif mode == 'config':
            saved[key] = copy.deepcopy(value)
        elif not _same(value, saved[key]):
            _refuse(where, f'{key} is {_short(saved[key])} in the checkpoint but '
                    f'{_short(value)} as this config builds it. {ACCEPT}')


def _pairs(built, saved, name='param_scheduler'):
    """(built, saved, where) for each scheduler, per optimizer when there are several."""
    if isinstance(built, dict):
        if not isinstance(saved, dict) or set(saved) != set(built):
            names = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            _refuse(name, f'names optimizers {names} in the checkpoint and {sorted(built)} in '
                    'the config. Resume with the same optimizers.')
        for key in built:
            yield from _pairs(built[key], saved[key], f'{name}[{key!r}]')
        return
    if not isinstance(saved, (list, tuple)) or len(saved) != len(built):
        count = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
        _refuse(name, f'has {count} schedulers in the checkpoint and {len(built)} in the '
                'config. Resume with the same param_scheduler list.')
    for i, (b, s) in enumerate(zip(built, saved)):
        yield b, s, f'{name}[{i}] ({type(b).__name__})'


# ----------------------------------------------------------------------------- optimizer
def _scheduled(schedulers):
    """The param-group keys the schedulers set (a momentum scheduler sets Adam's betas)."""
    names = set()
    flat = schedulers.values() if isinstance(schedulers, dict) else [schedulers]
    for group in flat:
        for s in group or []:
            names.add(getattr(s, 'param_name', 'lr'))
    if 'momentum' in names:
        names.add('betas')
    return names


#: scheduler attributes that bound the learning rate they move towards
_LR_BOUNDS = ('eta_min', 'eta_max', 'max_lr', 'min_lr', 'base_values', 'min_values')


def _numbers(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    return [abs(v) for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)]


def _lr_ceiling(group, schedulers):
    """A generous upper bound of the learning rate the built schedule can reach for ``group``:
    its largest ``*lr`` value or scheduler bound (``eta_min``, OneCycle's ``max_lr``), times
    what the warm-ups can multiply it by (``end_factor / start_factor``, overlapping schedules
    chain). It catches absurd values, not every value a schedule never takes."""
    flat = [s for seq in (schedulers.values() if isinstance(schedulers, dict) else [schedulers])
            for s in seq or []]
    peak = max([abs(v) for k, v in group.items() if k.endswith('lr') and k != 'lr'
                and isinstance(v, numbers.Real)] + [abs(group.get('lr', 0.0))]
               + [v for s in flat for k in _LR_BOUNDS for v in _numbers(getattr(s, k, None))])
    growth = 1.0
    for s in flat:
        start, end = getattr(s, 'start_factor', None), getattr(s, 'end_factor', None)
        if isinstance(start, numbers.Real) and isinstance(end, numbers.Real) and start > 0:
            growth *= max(1.0, end / start)
        factor = getattr(s, 'factor', None)
        if isinstance(factor, numbers.Real) and 0 < factor < 1:
            growth /= factor
    return peak * growth


def check_optimizer(built_state, saved, params, scheduled, schedulers, where='optimizer',
                    mode='strict'):
    """Compare a saved optimizer state with the built optimizer's ``state_dict()``.

    Args:
        built_state (dict): ``optimizer.state_dict()`` of the built optimizer (before loading).
        saved (dict): the checkpoint's.
        params (list[Tensor]): the parameters in ``state_dict`` index order.
        scheduled (set[str]): param-group keys the schedulers change.
        schedulers: the built schedulers (for the learning-rate ceiling).
        where (str): for the message.
        mode (str): as :func:`check_scheduler`, for the non-scheduled hyper-parameters.
    """
    if not isinstance(saved, dict):
        _refuse(where, f'is a {type(saved).__name__} in the checkpoint, not an optimizer state.')
    missing = sorted(set(built_state) - set(saved))
    extra = sorted(set(saved) - set(built_state))
    if missing or extra:
        _refuse(where, f'state has keys {extra} in the checkpoint and lacks {missing}: it '
                'belongs to another optimizer wrapper (AMP or not?). Resume with the same '
                'optim_wrapper, or start from the weights with load_from.')
    groups, ours = saved.get('param_groups'), built_state.get('param_groups', [])
    if not isinstance(groups, list) or len(groups) != len(ours):
        _refuse(where, f'has {len(groups) if isinstance(groups, list) else groups!r} parameter '
                f'groups in the checkpoint and {len(ours)} in the config (paramwise_cfg '
                'changed?). Resume with the same optim_wrapper.')
    for i, (mine, theirs) in enumerate(zip(ours, groups)):
        at = f'{where}.param_groups[{i}]'
        if not isinstance(theirs, dict) or set(theirs) != set(mine):
            keys = sorted(theirs) if isinstance(theirs, dict) else type(theirs).__name__
            _refuse(at, f'has keys {keys} in the checkpoint and {sorted(mine)} in the config '
                    '(another optimizer type?). Resume with the same optimizer.')
        if theirs['params'] != mine['params']:
            _refuse(at, 'holds other parameters in the checkpoint than in the config (model '
                    'or paramwise_cfg changed). Resume with the same model and optim_wrapper.')
        for key, value in mine.items():
            if key == 'params':
                continue
            if key in scheduled or mode == 'checkpoint':
                if not _same_kind(value, theirs[key]):
                    _refuse(at, f'{key} is {_short(theirs[key])} in the checkpoint; the '
                            f'optimizer keeps a {type(value).__name__} there.')
            elif mode == 'config':
                theirs[key] = copy.deepcopy(value)
            elif not _same(value, theirs[key]):
                _refuse(at, f'{key} is {_short(theirs[key])} in the checkpoint but '
                        f'{_short(value)} as this config builds it. {ACCEPT}')
        if mode != 'checkpoint' and 'lr' in scheduled and isinstance(theirs.get('lr'),
                                                                     numbers.Real):
            ceiling = _lr_ceiling(mine, schedulers)
            if not 0 <= theirs['lr'] <= ceiling * (1 + 1e-6):
                _refuse(at, f'lr is {theirs["lr"]!r} in the checkpoint, outside [0, '
                        f'{ceiling!r}], what this config\'s schedule can reach. {ACCEPT}')
    _check_optimizer_tensors(saved.get('state'), params, where)


def _check_optimizer_tensors(state, params, where):
    if not isinstance(state, dict):
        _refuse(where, f'state is a {type(state).__name__} in the checkpoint, not a dict.')
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            _refuse(where, f'state has an entry for parameter {index!r}; the optimizer has '
                    f'{len(params)} parameters (0-{len(params) - 1}).')
        if not isinstance(entry, dict):
            _refuse(where, f'state[{index}] is a {type(entry).__name__}, not a dict.')
        param = params[index]
        for key, value in entry.items():
            at = f'{where}.state[{index}][{key!r}]'
            if torch.is_tensor(value):
                if value.shape not in (param.shape, torch.Size([])) and value.numel() != 1:
                    _refuse(at, f'has shape {tuple(value.shape)}; parameter {index} has shape '
                            f'{tuple(param.shape)} (optimizer state is of the parameter\'s '
                            'shape, or a scalar). The file does not belong to this model.')
                if not (value.is_floating_point() or value.dtype in (torch.int64, torch.int32)):
                    _refuse(at, f'has dtype {value.dtype}; optimizer state is floating point.')
            elif not isinstance(value, (numbers.Real, type(None))):
                _refuse(at, f'is a {type(value).__name__}; optimizer state holds tensors and '
                        'numbers.')


def _optimizers(optim_wrapper):
    """{name or None: torch optimizer} of a built OptimWrapper / OptimWrapperDict."""
    if hasattr(optim_wrapper, 'optim_wrappers'):  # OptimWrapperDict
        return {k: w.optimizer for k, w in optim_wrapper.optim_wrappers.items()}
    return {None: optim_wrapper.optimizer}


def check_resume_state(runner, checkpoint, mode='strict'):
    """Check ``checkpoint``'s optimizer and scheduler state against the runner's built
    objects (call before mmengine loads them)."""
    schedulers = runner.param_schedulers
    built_schedulers = isinstance(schedulers, (list, dict)) and all(
        hasattr(s, 'state_dict') for seq in (schedulers.values() if isinstance(
            schedulers, dict) else [schedulers]) for s in seq)
    if 'param_schedulers' in checkpoint and built_schedulers:
        for built, saved, where in _pairs(schedulers, checkpoint['param_schedulers']):
            check_scheduler(built, saved, where, mode)
    wrapper = runner.optim_wrapper
    if 'optimizer' not in checkpoint or not hasattr(wrapper, 'state_dict'):
        return
    saved = checkpoint['optimizer']
    scheduled = _scheduled(schedulers if built_schedulers else [])
    optimizers = _optimizers(wrapper)
    for name, optimizer in optimizers.items():
        built_state = (wrapper if name is None else wrapper.optim_wrappers[name]).state_dict()
        theirs = saved if name is None else (saved.get(name) if isinstance(saved, dict) else None)
        params = [p for g in optimizer.param_groups for p in g['params']]
        where = 'optimizer' if name is None else f'optimizer[{name!r}]'
        sched = (schedulers.get(name, []) if isinstance(schedulers, dict) else schedulers) \
            if built_schedulers else []
        check_optimizer(built_state, theirs, params, scheduled, sched, where, mode)


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Refuse a resume whose optimizer or scheduler state does not fit this run's (see the
    module docstring). The top-level config key ``resume_schedule`` selects: ``'strict'``
    (default), ``'config'`` (the config's hyper-parameters, the file's counters) or
    ``'checkpoint'`` (the file's hyper-parameters, as plain mmengine); types and shapes are
    checked in every mode."""
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint):
        if not getattr(runner, '_resume', False):
            return  # load_from: mmengine loads only the weights
        mode = runner.cfg.get(ACCEPT_OPTION, 'strict')
        if mode not in MODES:
            raise ResumeStateError(f'{ACCEPT_OPTION}={mode!r}: use one of {MODES} (strict is '
                                   'the default).')
        check_resume_state(runner, checkpoint, mode)


def add_resume_check(cfg):
    """Add :class:`ResumeCheckHook` to ``cfg.custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') in ('ResumeCheckHook', ResumeCheckHook)
               for h in hooks):
        hooks.append(dict(type='ResumeCheckHook'))
    cfg.custom_hooks = hooks
    return cfg
