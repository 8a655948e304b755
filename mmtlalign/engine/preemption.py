"""Pre-emption and time limits: save a checkpoint at the current iteration when the scheduler
warns, and exit so that the job can be requeued and resume exactly.

Slurm sends ``SIGUSR1`` a while before a job's time limit when it was submitted with
``--signal=USR1@SECONDS`` (the benchmark's jobs are), and ``SIGTERM`` when it pre-empts,
requeues (``scontrol requeue``) or cancels a job (then ``SIGKILL`` after ``KillWait``, 30 s by
default). :class:`PreemptionHook` only notes the signal in its handler; at the end of the next
training iteration every rank agrees (an all-reduce of the flag, so all ranks stop at the same
iteration even when the signal reached them at different times), the hook saves a checkpoint of
that iteration through the atomic backend (temporary file, fsync, rename; ``last_checkpoint``
rewritten after it, so no half-written file is ever named), with every rank's random state
gathered for :class:`~mmtlalign.engine.resume.ExactResumeHook`, and the processes exit with
:data:`REQUEUE_EXIT` (75, ``EX_TEMPFAIL``). The benchmark's job script then requeues its job
(``scontrol requeue``), and the requeued job starts with ``--resume``; by hand::

    tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR --resume

A signal that comes while the run is still being set up is noted from the start of
``tools/train.py`` on (before the slow imports): ``SIGUSR1`` then stops after the first
iteration, ``SIGTERM`` right away without a new checkpoint.

A stop that falls on the last iteration of an epoch is taken after that epoch's own
checkpoint, as an epoch checkpoint (so the resumed run continues with the next epoch; the
epoch's validation is skipped, its weights are not changed by it).

``tools/train.py`` adds the hook to every run inside a Slurm job (``SLURM_JOB_ID`` set),
unless the config already has one; add ``dict(type='PreemptionHook')`` to ``custom_hooks`` to
use it elsewhere (any ``SIGUSR1``/``SIGTERM`` then stops the run at a saved iteration).
"""
import os
import os.path as osp
import signal

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .checkpoint import atomic_write
from .resume import ExactResumeHook

#: exit status of a run stopped by a signal after saving (``EX_TEMPFAIL``: try again)
REQUEUE_EXIT = 75
SIGNALS = ('SIGUSR1', 'SIGTERM')


#: signals received before training started (see :func:`add_preemption_hook`)
_EARLY = []


def _early_handler(signum, frame):
    _EARLY.append(signal.Signals(signum).name)


class Preempted(SystemExit):
    """Raised on every rank after the checkpoint is saved; exits with :data:`REQUEUE_EXIT`."""

    def __init__(self):
        super().__init__(REQUEUE_EXIT)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Save at the current iteration on ``SIGUSR1``/``SIGTERM`` and exit for requeue.

    Args:
        signals (list[str]): the signals that stop the run (default ``SIGUSR1``, ``SIGTERM``).
    """
    priority = 'LOWEST'  # after the checkpoint hook of the same iteration / epoch

    def __init__(self, signals=SIGNALS):
        unknown = [s for s in signals if not hasattr(signal, s)]
        if unknown:
            raise ValueError(f'PreemptionHook: unknown signal(s) {unknown}; use names like '
                             "'SIGUSR1', 'SIGTERM'.")
        self.signals = list(signals)
        self.received = None  # name of the first signal seen
        self._deferred = False  # agreed to stop, waiting for the epoch's end
        self._previous = {}

    # -- signals --
    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signal.Signals(signum).name

    def before_train(self, runner):
        for name in self.signals:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handler)
        early = [s for s in _EARLY if s in self.signals]
        _EARLY.clear()
        if early and self.received is None:
            self.received = early[0]
        # A time-limit warning (SIGUSR1) that came during set-up stops after the first
        # iteration (with its checkpoint), so that every requeued attempt makes progress; a
        # SIGTERM (pre-emption, cancel: little time left) stops now.
        terminate = torch.tensor([1 if self.received == 'SIGTERM' else 0], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(terminate, op='max')
        if terminate.item():  # nothing trained since the last checkpoint: stop, no new save
            runner.logger.info(f'{self.received or "a signal on another rank"} before training '
                               f'started: stopping for requeue (exit status {REQUEUE_EXIT}) '
                               'without a new checkpoint.')
            if get_world_size() > 1:
                barrier()
                torch.distributed.destroy_process_group()
            self.after_train(runner, stopping=True)
            raise Preempted()

    def after_train(self, runner, stopping=False):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        # Training is over: a late warning has nothing left to stop, and Python resets its
        # handlers to the default (terminate) while it shuts down, so a SIGUSR1 then would turn
        # a finished run into a failed job. A stopping run ignores SIGTERM too (its exit status
        # must stay REQUEUE_EXIT).
        for name in ('SIGUSR1', 'SIGTERM') if stopping else ('SIGUSR1',):
            if name in self.signals:
                signal.signal(getattr(signal, name), signal.SIG_IGN)

    def _agreed(self):
        """True on every rank when any rank has received a signal."""
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(flag, op='max')  # mmengine moves it to the backend's device
        return bool(flag.item())

    # -- stopping --
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self._deferred or not self._agreed():
            return
        loop = runner.train_loop
        if runner.iter + 1 >= loop.max_iters:
            return  # the run ends with this iteration anyway
        by_epoch = hasattr(loop, 'max_epochs') and not hasattr(loop, 'dataloader_iterator')
        if by_epoch and batch_idx + 1 == len(loop.dataloader):
            self._deferred = True  # stop after the epoch's own checkpoint hook
            return
        self._stop(runner, by_epoch=False)

    def after_train_epoch(self, runner):
        if self._deferred:
            self._stop(runner, by_epoch=True)

    def _stop(self, runner, by_epoch):
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(ckpt_hook, 'out_dir', None) or runner.work_dir
        step = runner.epoch + 1 if by_epoch else runner.iter + 1
        filename = f'{"epoch" if by_epoch else "iter"}_{step}.pth'
        path = osp.join(out_dir, filename)
        why = self.received or 'a signal on another rank'
        saved_already = runner.message_hub.get_info('last_ckpt') == path and osp.isfile(path)
        if not saved_already:
            runner.logger.info(f'{why}: saving {filename} and stopping for requeue.')
            for hook in runner.hooks:  # every rank, before only rank 0 writes
                if isinstance(hook, ExactResumeHook):
                    hook.collect(runner)
            runner.save_checkpoint(
                out_dir, filename,
                save_optimizer=getattr(ckpt_hook, 'save_optimizer', True),
                save_param_scheduler=getattr(ckpt_hook, 'save_param_scheduler', True),
                by_epoch=by_epoch, backend_args=dict(backend='atomic_local'))
            if is_main_process():
                atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), path)
        runner.logger.info(
            f'{why}: stopped after {"epoch" if by_epoch else "iteration"} {step} with '
            f'{path} saved; exit status {REQUEUE_EXIT} (requeue). Resume with --resume.')
        if get_world_size() > 1:
            barrier()
            torch.distributed.destroy_process_group()
        self.after_train(runner, stopping=True)
        raise Preempted()


def note_early_signals(environ=os.environ, seen=()):
    """Inside a Slurm job, note ``SIGUSR1``/``SIGTERM`` from now on for the hook; ``seen``: the
    names of those that an earlier handler already noted (tools/train.py installs a stdlib-only
    one before its slow imports: the signals' default action would kill the process)."""
    if 'SLURM_JOB_ID' in environ:
        for name in SIGNALS:
            signal.signal(getattr(signal, name), _early_handler)
        _EARLY.extend(seen)


def add_preemption_hook(cfg, environ=os.environ, seen=()):
    """Add :class:`PreemptionHook` to ``cfg.custom_hooks`` inside a Slurm job (unless there),
    and note ``SIGUSR1``/``SIGTERM`` from now on (a warning that comes while the run is still
    being set up would otherwise kill the process before the hook is installed)."""
    if 'SLURM_JOB_ID' not in environ:
        return cfg
    note_early_signals(environ, seen)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and str(h.get('type', '')).split('.')[-1] == 'PreemptionHook'
               for h in hooks):
        hooks.append(dict(type='PreemptionHook'))
        cfg.custom_hooks = hooks
    return cfg
