"""The parameter schedule against the length of the run, before training.

* A run shorter than the warm-up (the usual smoke test, ``train_cfg.max_epochs=1`` or
  ``train_cfg.max_iters=2`` on a recipe with a 5-epoch warm-up) would make mmengine fail with a
  traceback (a scheduler after the warm-up gets the end of training as its ``end``, which is not
  after its ``begin``). :func:`fit_schedule` shrinks the warm-up to fit and says by how much.
* A learning rate below a scheduler's ``eta_min`` (``--auto-scale-lr`` at tiny batches) makes
  the cosine "annealing" *raise* the learning rate: it is reported.
"""
import os
from typing import List

from mmengine.config import Config

from mmtlalign.errors import UserInputError

from .messages import warn


def _schedulers(cfg: Config) -> list:
    schedulers = cfg.get('param_scheduler') or []
    return [schedulers] if isinstance(schedulers, dict) else list(schedulers)


def _num(value) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


def fit_schedule(cfg: Config) -> List[str]:
    """Fit the schedulers of the training loop's unit into ``train_cfg.max_epochs`` /
    ``max_iters``; returns the warnings (also printed, rank 0).

    When a scheduler begins at or after the end of training (``begin >= length``: the run is
    shorter than the warm-up before it), the warm-up is shrunk to half the run
    (``length // 2``, or the whole run when it is one epoch / iteration): the schedulers that
    end where the later ones begin end there, the later ones begin there. A later scheduler
    that then begins at the end of the run (it never steps) gets ``end = begin + 1``, which
    mmengine needs. Schedulers in the other unit (per-iteration ones in an epoch loop) are left
    alone: their length in the loop's unit is not known before the data is.

    Raises:
        UserInputError: a scheduler whose explicit ``end`` is not after its ``begin``.
    """
    notes = []
    train_cfg = cfg.get('train_cfg') or {}
    by_epoch = 'max_epochs' in train_cfg
    length = train_cfg.get('max_epochs', train_cfg.get('max_iters'))
    if not isinstance(length, (int, float)) or length <= 0:
        return notes
    unit, key = ('epochs', 'max_epochs') if by_epoch else ('iterations', 'max_iters')
    same = [(i, s) for i, s in enumerate(_schedulers(cfg))
            if isinstance(s, dict) and bool(s.get('by_epoch', True)) == by_epoch]
    for i, s in same:
        begin, end = s.get('begin', 0), s.get('end')
        if end is not None and end <= begin:
            raise UserInputError(
                f'param_scheduler[{i}] ({s.get("type")}) ends at {end}, not after it begins '
                f'({begin}): set param_scheduler.{i}.end to more than {begin}.')
    late = [(i, s) for i, s in same if s.get('begin', 0) >= length]
    if not late:
        return notes
    warmup = min(s.get('begin', 0) for _, s in late)
    new = length // 2 if length >= 2 else length
    changes = []
    for i, s in same:
        begin, end = s.get('begin', 0), s.get('end')
        if begin < new and end is not None and new < end <= warmup:
            s['end'] = new
            changes.append(f'param_scheduler.{i}.end={_num(new)}')
    for i, s in late:
        if s.get('begin', 0) != new:
            s['begin'] = new
            changes.append(f'param_scheduler.{i}.begin={_num(new)}')
        if s.get('end') is None and new >= length:  # never steps; mmengine needs end > begin
            s['end'] = new + 1
            changes.append(f'param_scheduler.{i}.end={_num(new + 1)}')
    if warmup > new:
        first = late[0]
        after = (f'; param_scheduler[{first[0]}] ({first[1].get("type")}) then begins as the '
                 'run ends and does not step' if new >= length else '')
        notes.append(
            f'train_cfg.{key}={_num(length)} does not outlast the {_num(warmup)}-{unit[:-1]} '
            f'warm-up: the warm-up is shrunk by {_num(warmup - new)} {unit}, from '
            f'{_num(warmup)} to {_num(new)} ({" ".join(changes)}{after}). Pass these '
            '--cfg-options yourself to '
            f'silence this, or train for more than {_num(warmup)} {unit}.')
    return notes


def _world_size() -> int:
    for name in ('WORLD_SIZE', 'SLURM_NTASKS'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 1


def check_eta_min(cfg: Config) -> List[str]:
    """Warn when the learning rate the run starts annealing from (after ``auto_scale_lr`` when
    it is enabled) is below a scheduler's ``eta_min``: the "cosine" would rise to it."""
    notes = []
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer = wrapper.get('optimizer') if isinstance(wrapper, dict) else None
    lr = optimizer.get('lr') if isinstance(optimizer, dict) else None
    if not isinstance(lr, (int, float)):
        return notes
    scaled, how = lr, f'optim_wrapper.optimizer.lr={lr:g}'
    auto = cfg.get('auto_scale_lr') or {}
    batch = (cfg.get('train_dataloader') or {}).get('batch_size')
    ratio = 1.0
    if auto.get('enable') and auto.get('base_batch_size') and isinstance(batch, int):
        world = _world_size()
        ratio = world * batch / auto['base_batch_size']
        scaled = lr * ratio
        how = (f'auto_scale_lr scales the learning rate by {world} x {batch} / '
               f'{auto["base_batch_size"]} = {ratio:g}, from {lr:g} to {scaled:g}')
    for i, s in enumerate(_schedulers(cfg)):
        eta_min = s.get('eta_min') if isinstance(s, dict) else None
        if isinstance(eta_min, (int, float)) and scaled < eta_min:
            notes.append(
                f'{how}, below param_scheduler[{i}] ({s.get("type")}) eta_min={eta_min:g}: it '
                f'would raise the learning rate from {scaled:g} to {eta_min:g} instead of '
                f'annealing it. Scale eta_min too, e.g. --cfg-options param_scheduler.{i}.'
                f'eta_min={eta_min * ratio if ratio < 1 else scaled / 10:g}.')
    return notes


def check_schedule(cfg: Config) -> List[str]:
    """:func:`fit_schedule` and :func:`check_eta_min`; prints and returns the warnings."""
    notes = fit_schedule(cfg) + check_eta_min(cfg)
    for note in notes:
        warn(note)
    return notes
