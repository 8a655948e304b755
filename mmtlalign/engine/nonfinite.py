"""Stop on a NaN/Inf loss instead of training on (and checkpointing) garbage.

With mixed precision and a dynamic loss scale (``--amp``: mmengine's ``AmpOptimWrapper``), an
overflow is routine: the loss scaler skips that step (the weights are not touched) and lowers
the scale. Such a run is stopped only when it has really diverged (see
:class:`NonFiniteLossHook`).
"""
import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .. import workdir
from ..errors import UserInputError
from ..workdir import WorkDirError


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss (or non-finite weights about to be saved)."""


def _non_finite_values(outputs):
    """``{name: value}`` of the loss entries of ``outputs`` that are NaN or Inf."""
    bad = {}
    for name, value in (outputs or {}).items():
        if 'loss' not in name:
            continue
        value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value)
        if not bool(torch.isfinite(value).all()):
            bad[name] = value.float().mean().item()
    return bad


def _last_checkpoint(runner):
    """The checked ``last_checkpoint`` of the work dir (it goes into an error message and the
    log: a planted one must not put a line of its own there)."""
    try:
        return workdir.read_last_checkpoint(runner.work_dir)
    except (WorkDirError, OSError) as e:
        return f'unknown ({e})'


def _loss_scalers(optim_wrapper):
    """The enabled loss scalers (``torch.amp.GradScaler``) of an optimizer wrapper (or of each
    wrapper of an ``OptimWrapperDict``)."""
    wrappers = optim_wrapper.values() if hasattr(optim_wrapper, 'values') else [optim_wrapper]
    scalers = []
    for wrapper in wrappers:
        scaler = getattr(wrapper, 'loss_scaler', None)
        if scaler is not None and scaler.is_enabled():
            scalers.append(scaler)
    return scalers


def _non_finite_weights(model):
    """Names of the parameters of ``model`` that hold NaN/Inf (the first few)."""
    bad = []
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            bad.append(name)
            if len(bad) == 3:
                break
    return bad


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training when the loss is NaN or Inf, or when mixed precision has diverged.

    **Without a loss scaler** (float32 training, or AMP with the scaler disabled) training stops
    at the first iteration whose loss is NaN or Inf.

    **With a loss scaler** (``AmpOptimWrapper``, e.g. ``--amp``) a non-finite loss is an
    overflow that the scaler has already handled: it skipped that step, so the weights are the
    previous ones, and it lowers a dynamic scale. The run goes on (with a warning) and stops
    only on real divergence, which is any of:

    - ``max_consecutive`` iterations in a row (default 10) with a non-finite loss: loss scaling
      acts on the backward pass only, so a forward pass that keeps overflowing will not recover;
    - a dynamic loss scale that fell below ``min_loss_scale`` (default 1.0): the gradients
      overflow half precision even unscaled (the scale halves at every overflowed step, so from
      the default 65536 that is 17 overflowed steps in a row);
    - NaN/Inf in the weights after a step (the scaler did not catch it).

    The hook runs after the iteration's optimizer step but before the checkpoint hook
    (priority), so weights produced by a non-finite loss are never saved: the last checkpoint
    on disk is the last good one, and the error names the iteration and that checkpoint. In
    distributed runs the decision is taken jointly (one all-reduce of a flag per iteration),
    so every rank stops at the same iteration rather than some waiting forever in a collective.

    Before every checkpoint save it also checks the weights themselves (a finite loss can still
    come with overflowing gradients): a checkpoint with non-finite weights is refused.

    Args:
        check_weights_on_save (bool): refuse to save non-finite weights.
        max_consecutive (int): with a loss scaler, stop after this many non-finite losses in a
            row.
        min_loss_scale (float): with a dynamic loss scaler, stop when the scale falls below it.
    """
    priority = 'ABOVE_NORMAL'  # before LoggerHook (BELOW_NORMAL) and CheckpointHook (VERY_LOW)

    def __init__(self, check_weights_on_save=True, max_consecutive=10, min_loss_scale=1.0):
        if max_consecutive < 1:
            raise UserInputError(f'NonFiniteLossHook: max_consecutive must be >= 1, got '
                                 f'{max_consecutive}.')
        self.check_weights_on_save = check_weights_on_save
        self.max_consecutive = max_consecutive
        self.min_loss_scale = min_loss_scale
        self.consecutive = 0  # non-finite losses in a row, with a loss scaler

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        bad = _non_finite_values(outputs)
        ranks = self._ranks_with(bool(bad))
        scalers = _loss_scalers(runner.optim_wrapper)
        if not scalers:
            if ranks:
                self._stop(runner, self._loss_message(runner, bad, ranks) + ' Training stopped '
                           'before this iteration\'s weights were saved.')
            return
        scale = min(scaler.get_scale() for scaler in scalers)
        if not ranks:
            self.consecutive = 0
        else:
            self.consecutive += 1
            weights = _non_finite_weights(getattr(runner.model, 'module', runner.model))
            if weights:
                self._stop(runner, self._loss_message(runner, bad, ranks) + ' Under mixed '
                           f'precision the weights became non-finite ({", ".join(weights)}) '
                           'although the loss scaler skips overflowed steps: training diverged.')
            if self.consecutive >= self.max_consecutive:
                self._stop(runner, self._loss_message(runner, bad, ranks) + ' Under mixed '
                           f'precision, {self.consecutive} non-finite losses in a row (limit '
                           f'max_consecutive={self.max_consecutive}; loss scale {scale:g}): '
                           'training diverged.')
            runner.logger.warning(
                self._loss_message(runner, bad, ranks) + ' The loss scaler skipped this step '
                f'(weights unchanged; loss scale now {scale:g}); {self.consecutive} in a row, '
                f'training stops at {self.max_consecutive}.')
        dynamic = any(scaler.get_backoff_factor() < 1 for scaler in scalers)
        if dynamic and scale < self.min_loss_scale:
            self._stop(runner, f'Mixed precision diverged at {self._where(runner)}: the dynamic '
                       f'loss scale fell to {scale:g}, below min_loss_scale='
                       f'{self.min_loss_scale:g}: gradients overflow even unscaled.')

    @staticmethod
    def _ranks_with(flag):
        """The ranks on which ``flag`` is True (one all-reduce in distributed runs)."""
        world_size = get_world_size()
        if world_size == 1:
            return [0] if flag else []
        flags = torch.zeros(world_size)
        if flag:
            flags[get_rank()] = 1
        all_reduce(flags, op='sum')
        return [r for r in range(world_size) if flags[r] > 0]

    @staticmethod
    def _where(runner):
        where = f'iteration {runner.iter + 1}'
        if not hasattr(runner.train_loop, 'dataloader_iterator'):  # epoch-based loop
            where += f' (epoch {runner.epoch + 1})'
        return where

    def _loss_message(self, runner, bad, ranks):
        values = ', '.join(f'{k}={v}' for k, v in bad.items()) or 'non-finite on another rank'
        on_ranks = f' on rank(s) {ranks}' if get_world_size() > 1 else ''
        return f'Non-finite loss at {self._where(runner)}{on_ranks}: {values}.'

    @staticmethod
    def _stop(runner, msg):
        last = _last_checkpoint(runner)
        kept = (f'The last good checkpoint is {last}; fix the cause and continue from it with '
                '--resume' if last else 'No checkpoint had been saved yet')
        msg = (f'{msg} {kept} (common causes: a learning rate too high for the batch size, no '
               'gradient clipping (optim_wrapper.clip_grad), fp16 overflow (try '
               '--cfg-options optim_wrapper.dtype=bfloat16), bad input data).')
        runner.logger.error(msg)
        raise NonFiniteLossError(msg)

    def before_save_checkpoint(self, runner, checkpoint):
        if not self.check_weights_on_save:
            return
        for name, tensor in checkpoint.get('state_dict', {}).items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() \
                    and not bool(torch.isfinite(tensor).all()):
                msg = (f'Refusing to save a checkpoint at iteration {runner.iter + 1}: weight '
                       f'{name!r} has NaN/Inf values. The last good checkpoint is '
                       f'{_last_checkpoint(runner)}; fix the cause (learning rate, gradient '
                       'clipping, data) and continue from it with --resume.')
                runner.logger.error(msg)
                raise NonFiniteLossError(msg)
