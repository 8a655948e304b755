"""Stop on a NaN/Inf loss instead of training on (and checkpointing) garbage."""
import os.path as osp

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


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
    path = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(path):
        with open(path) as f:
            return f.read().strip() or None
    return None


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or Inf.

    Runs after the iteration's optimizer step but before the checkpoint hook (priority), so the
    weights that the non-finite loss produced are never saved: the last checkpoint on disk is
    the last good one, and the error names the iteration and that checkpoint. In distributed
    runs the decision is taken jointly (one all-reduce of a flag per iteration), so every rank
    stops at the same iteration rather than some waiting forever in a collective.

    Before every checkpoint save it also checks the weights themselves (a finite loss can still
    come with overflowing gradients): a checkpoint with non-finite weights is refused.

    Args:
        check_weights_on_save (bool): refuse to save non-finite weights.
    """
    priority = 'ABOVE_NORMAL'  # before LoggerHook (BELOW_NORMAL) and CheckpointHook (VERY_LOW)

    def __init__(self, check_weights_on_save=True):
        self.check_weights_on_save = check_weights_on_save

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        bad = _non_finite_values(outputs)
        world_size = get_world_size()
        ranks = [get_rank()] if bad else []
        if world_size > 1:
            flags = torch.zeros(world_size)
            if bad:
                flags[get_rank()] = 1
            all_reduce(flags, op='sum')
            ranks = [r for r in range(world_size) if flags[r] > 0]
        if not ranks:
            return
        where = f'iteration {runner.iter + 1}'
        if not hasattr(runner.train_loop, 'dataloader_iterator'):  # epoch-based loop
            where += f' (epoch {runner.epoch + 1})'
        values = ', '.join(f'{k}={v}' for k, v in bad.items()) or 'non-finite on another rank'
        on_ranks = f' on rank(s) {ranks}' if world_size > 1 else ''
        last = _last_checkpoint(runner)
        kept = (f'The last good checkpoint is {last}; fix the cause and continue from it with '
                '--resume' if last else 'No checkpoint had been saved yet')
        msg = (f'Non-finite loss at {where}{on_ranks}: {values}. Training stopped before '
               f'this iteration\'s weights were saved. {kept} (common causes: a learning rate '
               'too high for the batch size, no gradient clipping (optim_wrapper.clip_grad), '
               'fp16 overflow, bad input data).')
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
