"""Exact resume: the random state that mmengine does not save.

mmengine's resume restores weights, optimizer, schedulers, the message hub and the epoch/iter
counters, and re-seeds the global generators with the run's seed. What a resumed run still gets
wrong:

- the global generators (``random``, ``numpy``, ``torch``, CUDA) restart from the seed instead of
  continuing where the interrupted run was: dropout, drop-path and the data pipeline (with
  ``num_workers=0``) draw different numbers;
- the TL-Align mixer's own generator (partners, boxes, lambdas) restarts;
- ``EpochBasedTrainLoop`` resumed from a mid-epoch (iteration) checkpoint restarts the epoch from
  its first batch, training those batches twice;
- ``IterBasedTrainLoop`` replays the data loader to skip the trained batches, which runs the data
  pipeline and so moves the global generators.

:class:`ExactResumeHook` saves, per process, the global generators and the mixer generators into
every checkpoint (``checkpoint['exact_resume']``), and on resume puts them back at the point of
the data stream where they were taken: after the loader has skipped the trained batches, just
before the first batch that is trained after the resume point. It also skips the trained part of
an interrupted epoch, and keeps validation from moving the training random state (so whether a
run validated at an iteration, or was resumed there, does not change what follows).

On resume the record is checked first: generator states of the types and shapes this process's
generators have, or a one-line :class:`~mmtlalign.engine.resume_check.ResumeStateError`.

In distributed runs only rank 0 writes checkpoints, so the other ranks' states are gathered to it
first; :class:`~mmtlalign.engine.checkpoint.AtomicCheckpointHook` does that (with mmengine's plain
``CheckpointHook`` only rank 0's state is saved and the hook warns).
"""
import functools
import logging
import os
import random

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from ..models.mixing import BatchMixer
from ._loader import restart_train_iterator
from .resume_check import ResumeStateError

STATE_KEY = 'exact_resume'
STATE_VERSION = 1


def _mixers(model):
    """``{module name: mixer}`` (every :class:`BatchMixer`) of the (unwrapped) model."""
    model = getattr(model, 'module', model)
    found = {}
    for name, module in model.named_modules():
        mixer = getattr(module, 'mixer', None)
        if isinstance(mixer, BatchMixer):
            found[name] = mixer
    return found


def global_rng_state():
    """The global generators' states, as types that ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    state = {
        'python': random.getstate(),
        'numpy': {
            'key': [int(k) for k in np_state['state']['key']],
            'pos': int(np_state['state']['pos']),
            'has_gauss': int(np_state['has_gauss']),
            'gauss': float(np_state['gauss']),
        },
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state):
    """Inverse of :func:`global_rng_state`.

    Returns:
        str | None: why the CUDA generators could not be restored exactly (the checkpoint's
        and this process's visible GPU counts differ, or one of them has no CUDA state), for
        the caller to log; None when everything was restored.
    """
    random.setstate(_as_tuple(state['python']))
    np_state = state['numpy']
    np.random.set_state({
        'bit_generator': 'MT19937',
        'state': {'key': np.asarray(np_state['key'], dtype=np.uint32), 'pos': np_state['pos']},
        'has_gauss': np_state['has_gauss'],
        'gauss': np_state['gauss'],
    })
    torch.set_rng_state(state['torch'].cpu())
    return _set_cuda_rng_state(state.get('cuda'))


def _set_cuda_rng_state(saved):
    """Restore the per-GPU generators (``torch.cuda.get_rng_state_all`` order: visible device
    index). When the GPU counts differ, the devices both runs have get their state back (a
    process's own device is usually one of them) and the difference is reported."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not saved:
        if have and torch.cuda.is_initialized():
            return (f'the checkpoint holds no CUDA random state (it was written without GPU '
                    f'use) and this process uses {have} visible GPU(s): GPU random numbers '
                    '(dropout, drop-path) after the resume differ from an uninterrupted run.')
        return None
    saved = [s.cpu() for s in saved]
    if have == 0:
        return (f'the checkpoint holds the CUDA random state of {len(saved)} GPU(s) and this '
                'process sees none: it is not restored; GPU-side randomness cannot continue.')
    common = min(have, len(saved))
    if common == len(saved) == have:
        torch.cuda.set_rng_state_all(saved)
        return None
    for device, gen_state in enumerate(saved[:common]):
        torch.cuda.set_rng_state(gen_state, device)
    return (f'the checkpoint holds the CUDA random state of {len(saved)} GPU(s) but this '
            f'process sees {have} (CUDA_VISIBLE_DEVICES or the machine changed): restored '
            f'GPU(s) 0-{common - 1} only, so GPU random numbers after the resume may differ '
            'from an uninterrupted run. Resume with the same visible GPUs for an exact resume.')


# ----------------------------------------------------------------------------- checking
def _bad(where, what):
    raise ResumeStateError(
        f'resume: {STATE_KEY}{where} {what}; ExactResumeHook never writes that (the file is '
        'damaged or was edited). Resume from a checkpoint this run wrote, or remove '
        'ExactResumeHook from custom_hooks to resume without the random state (not bitwise '
        'exact).')


def _is_int(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _check_generator_tensor(value, like, where):
    if not torch.is_tensor(value) or value.dtype != torch.uint8 or value.shape != like.shape:
        got = (f'a {value.dtype} tensor of shape {tuple(value.shape)}' if torch.is_tensor(value)
               else f'a {type(value).__name__}')
        _bad(where, f'is {got}, not the uint8 tensor of shape {tuple(like.shape)} that this '
             'process\'s generator has')


def check_global_rng_state(state, where=''):
    """``state`` has the types and shapes :func:`global_rng_state` produces here."""
    if not isinstance(state, dict) or not {'python', 'numpy', 'torch'} <= set(state):
        _bad(where, 'lacks the python/numpy/torch generator states')
    python = state['python']
    if not (isinstance(python, (list, tuple)) and len(python) == 3 and python[0] == 3
            and isinstance(python[1], (list, tuple)) and len(python[1]) == 625
            and all(_is_int(v, 0, 2 ** 32) for v in python[1]) and python[1][-1] <= 624
            and (python[2] is None or isinstance(python[2], float))):
        _bad(f'{where}.python', 'is not a Mersenne Twister state (version 3, 625 words)')
    numpy = state['numpy']
    if not (isinstance(numpy, dict) and set(numpy) == {'key', 'pos', 'has_gauss', 'gauss'}
            and isinstance(numpy['key'], (list, tuple)) and len(numpy['key']) == 624
            and all(_is_int(v, 0, 2 ** 32) for v in numpy['key'])
            and _is_int(numpy['pos'], 0, 625) and numpy['has_gauss'] in (0, 1)
            and isinstance(numpy['gauss'], float)):
        _bad(f'{where}.numpy', 'is not a numpy MT19937 state (624 words, pos 0-624)')
    _check_generator_tensor(state['torch'], torch.get_rng_state(), f'{where}.torch')
    cuda = state.get('cuda')
    if cuda is not None:
        if not isinstance(cuda, (list, tuple)):
            _bad(f'{where}.cuda', f'is a {type(cuda).__name__}, not a list of GPU states')
        like = (torch.cuda.get_rng_state(0) if torch.cuda.is_available()
                and torch.cuda.is_initialized() else None)
        for i, gen in enumerate(cuda):
            if like is not None:
                _check_generator_tensor(gen, like, f'{where}.cuda[{i}]')
            elif not (torch.is_tensor(gen) and gen.dtype == torch.uint8 and gen.dim() == 1
                      and gen.numel() <= 64):  # a CUDA generator state is 16 bytes
                _bad(f'{where}.cuda[{i}]', 'is not a CUDA generator state (uint8, 16 bytes)')


def check_exact_resume_state(pending, mixers):
    """The checkpoint's ``exact_resume`` record has the types and shapes this hook writes
    (see :meth:`ExactResumeHook.before_save_checkpoint`); ``mixers`` are the model's."""
    if not isinstance(pending, dict):
        _bad('', f'is a {type(pending).__name__}, not a dict')
    if pending.get('version') != STATE_VERSION:
        _bad('[\'version\']', f'is {pending.get("version")!r}, not {STATE_VERSION}')
    for key in ('world_size', 'iter', 'epoch', 'dataloader_len'):
        if not _is_int(pending.get(key), 1 if key == 'world_size' else 0, 2 ** 62):
            _bad(f'[{key!r}]', f'is {pending.get(key)!r}, not a count')
    ranks = pending.get('ranks')
    if not isinstance(ranks, list) or not 1 <= len(ranks) <= pending['world_size']:
        _bad("['ranks']", f'is not a list of 1-{pending["world_size"]} per-process states')
    fresh = np.random.default_rng(0).bit_generator.state
    for r, rank in enumerate(ranks):
        at = f"['ranks'][{r}]"
        if not isinstance(rank, dict) or set(rank) != {'global', 'mixers'} \
                or not isinstance(rank['mixers'], dict):
            _bad(at, 'is not a {global, mixers} record')
        check_global_rng_state(rank['global'], f"{at}['global']")
        for name, mixer_state in rank['mixers'].items():
            if name not in mixers or mixer_state is None:
                continue  # told apart (and warned about) when restored
            gen = mixer_state.get('bit_generator') if isinstance(mixer_state, dict) else None
            if not (isinstance(gen, dict) and set(gen) == set(fresh)
                    and gen.get('bit_generator') == fresh['bit_generator']
                    and all(_same_shape(gen[k], fresh[k]) for k in fresh)):
                _bad(f"{at}['mixers'][{name!r}]",
                     f'is not a numpy {fresh["bit_generator"]} generator state')


def _same_shape(value, like):
    """Same nested dict keys and the same leaf types (ints are ints, strs are strs)."""
    if isinstance(like, dict):
        return isinstance(value, dict) and set(value) == set(like) and all(
            _same_shape(value[k], like[k]) for k in like)
    if isinstance(like, int):
        return _is_int(value, 0, 2 ** 128)
    return type(value) is type(like)


def _as_tuple(obj):
    """random.setstate wants tuples; a checkpoint round trip may give lists."""
    if isinstance(obj, (list, tuple)):
        return tuple(_as_tuple(o) for o in obj)
    return obj


class _SkipThenRestore:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: lets the loop skip ``skip`` batches,
    then, just before the next batch is fetched, restores the random state and unwraps."""

    def __init__(self, loop, iterator, skip, restore):
        self._loop, self._iterator, self._skip, self._restore = loop, iterator, skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
            return next(self._iterator)
        self._restore()
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


class _EpochResumeLoader:
    """Stands in for ``EpochBasedTrainLoop.dataloader`` during the first resumed epoch: its
    iterator skips the ``skip`` batches of the epoch that were trained before the checkpoint,
    and the random state is restored at the matching point (before the epoch's iterator is
    created when nothing is skipped, else after the skipped batches)."""

    def __init__(self, loop, dataloader, skip, restore):
        self._loop, self._dataloader, self._skip, self._restore = loop, dataloader, skip, restore

    def __iter__(self):
        self._loop.dataloader = self._dataloader
        if self._skip == 0:
            self._restore()
            return iter(self._dataloader)
        iterator = iter(self._dataloader)
        for _ in range(self._skip):
            next(iterator)
        self._restore()
        return iterator

    def __len__(self):
        return len(self._dataloader)

    def __getattr__(self, name):
        return getattr(self._dataloader, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save and restore what a bitwise-exact resume needs beyond mmengine's checkpoint.

    Saves per process: the ``random``/``numpy``/``torch``/CUDA generator states and the state of
    every :class:`TLAlignMix` in the model. On ``--resume`` restores them where the interrupted
    run took them (see the module docstring), skips the trained part of an interrupted epoch,
    and warns when exactness cannot hold (different number of processes or of visible GPUs, a
    checkpoint without the state, persistent data-loader workers in an epoch-based loop).

    Args:
        isolate_val (bool): validation does not move the training random state (it is saved
            before validation and put back after). Needed for exact resume when the run
            validates between a checkpoint and the next training iteration.
    """
    priority = 'VERY_HIGH'

    def __init__(self, isolate_val=True):
        self.isolate_val = isolate_val
        self._val_snapshot = None
        self._gathered = None  # (iter, [state per rank]) collected before a save
        self._pending = None  # the state loaded from a checkpoint, until training starts
        self._pending_seed = None
        self._warned_single = False

    def before_run(self, runner):
        # randomness.deterministic=True makes mmengine call
        # torch.use_deterministic_algorithms(True), under which cuBLAS raises at the first
        # matmul unless this is set before cuBLAS starts (the first forward comes later)
        if (torch.cuda.is_available() and torch.are_deterministic_algorithms_enabled()
                and not os.environ.get('CUBLAS_WORKSPACE_CONFIG')):
            os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':4096:8'
            runner.logger.info('Deterministic algorithms are on: set '
                               'CUBLAS_WORKSPACE_CONFIG=:4096:8 for deterministic cuBLAS.')

    # -- saving --
    def local_state(self, runner):
        """This process's state (the pre-validation state while validating)."""
        global_state = (self._val_snapshot if self._val_snapshot is not None
                        else global_rng_state())
        mixers = {}
        for name, mixer in _mixers(runner.model).items():
            # an unused mixer has no generator yet; creating it would draw from numpy's
            # global generator, so record that it was unseeded instead
            mixers[name] = None if mixer._rng is None else mixer.state_dict()
        return {'global': global_state, 'mixers': mixers}

    def collect(self, runner):
        """Gather every rank's state; call on all ranks right before a checkpoint is saved."""
        state = self.local_state(runner)
        states = all_gather_object(state) if get_world_size() > 1 else [state]
        self._gathered = (runner.iter, states)

    def before_save_checkpoint(self, runner, checkpoint):
        if self._gathered is not None and self._gathered[0] == runner.iter:
            states = self._gathered[1]
        else:
            states = [self.local_state(runner)]
            if get_world_size() > 1 and not self._warned_single:
                runner.logger.warning(
                    'ExactResumeHook: only rank 0\'s random state is saved because the '
                    'checkpoint hook did not gather the other ranks\'; use '
                    'default_hooks.checkpoint.type=\'AtomicCheckpointHook\' for exact '
                    'distributed resume.')
                self._warned_single = True
        self._gathered = None
        loop = runner.train_loop
        checkpoint[STATE_KEY] = {
            'version': STATE_VERSION,
            'world_size': get_world_size(),
            'iter': checkpoint['meta']['iter'],
            'epoch': checkpoint['meta']['epoch'],
            'loop': type(loop).__name__,
            'dataloader_len': len(loop.dataloader),
            'ranks': states,
        }

    # -- validation does not touch the training random state --
    def before_val(self, runner):
        if self.isolate_val and self._is_training(runner):
            self._val_snapshot = global_rng_state()

    def after_val(self, runner):
        if self._val_snapshot is not None:
            set_global_rng_state(self._val_snapshot)  # same process: the GPU count is the same
            self._val_snapshot = None

    @staticmethod
    def _is_training(runner):
        from mmengine.runner.base_loop import BaseLoop
        return isinstance(runner._train_loop, BaseLoop)

    # -- resuming --
    def after_load_checkpoint(self, runner, checkpoint):
        # Called for ``load_from`` too; only a resume sets the loop counters to the
        # checkpoint's, which is checked in before_train.
        self._pending = checkpoint.get(STATE_KEY)
        self._pending_seed = checkpoint.get('meta', {}).get('seed')
        if getattr(runner, '_resume', False) and self._pending is not None:
            check_exact_resume_state(self._pending, _mixers(runner.model))

    def before_train(self, runner):
        pending, self._pending = self._pending, None
        loop = runner.train_loop
        if loop.iter == 0:
            return  # fresh run, or weights loaded with load_from: nothing to resume
        if pending is None:
            runner.logger.warning(
                f'Resumed at iteration {loop.iter}, but the checkpoint holds no '
                f'{STATE_KEY!r} state (it was not written with ExactResumeHook): weights and '
                'optimizer are restored, but random augmentation, mixing and dropout after '
                'this point differ from an uninterrupted run.')
            return
        if pending['iter'] != loop.iter:
            return
        if pending['world_size'] != get_world_size():
            runner.logger.warning(
                f'The checkpoint was written by {pending["world_size"]} processes and this run '
                f'has {get_world_size()}: the random state is not restored, so the run '
                'continues correctly but not bitwise as the uninterrupted one would.')
            return
        if pending['dataloader_len'] != len(loop.dataloader):
            runner.logger.warning(
                f'The training data loader has {len(loop.dataloader)} batches per epoch, the '
                f'checkpoint\'s had {pending["dataloader_len"]}: the dataset or batch size '
                'changed, so the resumed run cannot continue the interrupted data order exactly.')
        state = pending['ranks'][get_rank()] if len(pending['ranks']) > get_rank() else None
        if state is None:
            runner.logger.warning(f'The checkpoint has no random state for rank {get_rank()}.')
            return
        self._restore_mixers(runner, state['mixers'])
        self._adopt_checkpoint_seed(runner, loop, self._pending_seed)
        self._warn_persistent_workers(runner, loop)

        def restore():
            problem = set_global_rng_state(state['global'])
            if problem:
                runner.logger.warning(f'ExactResumeHook (rank {get_rank()}): {problem}')
            print_log(f'ExactResumeHook: random state of iteration {pending["iter"]} restored.',
                      logger='current', level=logging.DEBUG)

        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop skips loop.iter batches
            loop.dataloader_iterator = _SkipThenRestore(loop, loop.dataloader_iterator,
                                                        loop.iter, restore)
        elif isinstance(loop, EpochBasedTrainLoop):
            skip = loop.iter - loop.epoch * len(loop.dataloader)
            if not 0 <= skip <= len(loop.dataloader):
                runner.logger.warning(
                    f'Cannot place iteration {loop.iter} in epoch {loop.epoch} of '
                    f'{len(loop.dataloader)} batches; resuming from the start of the epoch.')
                skip = 0
            elif skip:
                runner.logger.info(f'Skipping the {skip} batches of epoch {loop.epoch + 1} '
                                   'trained before the checkpoint.')
            loop.dataloader = _EpochResumeLoader(loop, loop.dataloader, skip, restore)
        else:
            restore()

    @staticmethod
    def _adopt_checkpoint_seed(runner, loop, seed):
        """Seed the data order and the loader workers with the interrupted run's seed.

        With ``randomness.seed=None`` (mmpretrain's default) every run draws its own seed;
        mmengine's resume re-seeds the global generators with the checkpoint's seed, but the
        training sampler and the worker seeds were already built with the new run's one, so
        the data order after the resume would silently differ.
        """
        if seed is None:
            return
        loader = loop.dataloader
        changed = []
        sampler = getattr(loader, 'sampler', None)
        if getattr(sampler, 'seed', None) not in (None, seed):
            changed.append(f'sampler seed {sampler.seed}')
            sampler.seed = seed
        init_fn = getattr(loader, 'worker_init_fn', None)
        if isinstance(init_fn, functools.partial) and \
                init_fn.keywords.get('seed') not in (None, seed):
            changed.append(f'worker seed {init_fn.keywords["seed"]}')
            loader.worker_init_fn = functools.partial(
                init_fn.func, *init_fn.args, **dict(init_fn.keywords, seed=seed))
        if changed:
            runner.logger.info(f'Resume: training data loader reseeded with the interrupted '
                               f'run\'s seed {seed} (was {", ".join(changed)}).')
            restart_train_iterator(loop)

    @staticmethod
    def _restore_mixers(runner, states):
        mixers = _mixers(runner.model)
        for name, mixer_state in states.items():
            mixer = mixers.get(name)
            if mixer is None:
                runner.logger.warning(f'The checkpoint has a mixer state for {name!r}, which '
                                      'this model does not have.')
            elif mixer_state is None:
                mixer._rng = None
            else:
                # build the generator directly: mixer.rng would draw a seed from numpy's
                # global generator
                mixer._rng = np.random.default_rng(0)
                mixer.load_state_dict(mixer_state)

    @staticmethod
    def _warn_persistent_workers(runner, loop):
        loader = loop.dataloader
        if (isinstance(loop, EpochBasedTrainLoop) and getattr(loader, 'num_workers', 0) > 0
                and getattr(loader, 'persistent_workers', False)):
            runner.logger.warning(
                'train_dataloader has persistent_workers=True: its worker processes carry '
                'their random state from epoch to epoch, which a checkpoint cannot hold, so '
                'data augmentation after this resume differs from an uninterrupted run (the '
                'result is statistically, not bitwise, the same). For bitwise exact resume '
                'set train_dataloader.persistent_workers=False (workers restart each epoch '
                'with the same seeds) or num_workers=0.')
