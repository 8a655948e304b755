"""Say, in one line at start, how ``auto_scale_lr`` changes the learning rate.

mmengine's ``Runner.train`` scales every learning rate by ``total batch / base_batch_size`` when
``auto_scale_lr.enable`` is set; the upstream recipes leave it off (``--auto-scale-lr`` turns it
on). The TL-Align DeiT/Swin recipes enable it, as the released code scales lr with the total
batch (5e-4 x total batch / 512), so a run on another number of GPUs trains the paper's recipe.
mmengine only logs the ratio; :func:`lr_scaling_note` states the learning rate before and after,
and why, so that the scaling is never silent.
"""


def _total_batch(cfg, world_size):
    return world_size * cfg.train_dataloader.batch_size


def lr_scaling_note(cfg, world_size, from_flag=False):
    """The one-line note for ``cfg`` run by ``world_size`` processes, or None when
    ``auto_scale_lr`` is off (or the config has no single optimizer learning rate).

    Args:
        cfg (mmengine.Config): the training config (``optim_wrapper.optimizer.lr``,
            ``train_dataloader.batch_size``, ``auto_scale_lr``).
        world_size (int): processes (GPUs) of the run.
        from_flag (bool): ``--auto-scale-lr`` enabled it (else the config itself did).
    """
    scale = cfg.get('auto_scale_lr') or {}
    if not scale.get('enable', False) or 'base_batch_size' not in scale:
        return None
    lr = ((cfg.get('optim_wrapper') or {}).get('optimizer') or {}).get('lr')
    if lr is None or cfg.get('train_dataloader') is None:
        return None
    base = scale['base_batch_size']
    real = _total_batch(cfg, world_size)
    why = ('--auto-scale-lr' if from_flag else
           'auto_scale_lr.enable=True in the config, as the released recipe scales lr with '
           'the total batch')
    keep = '' if from_flag else '; --cfg-options auto_scale_lr.enable=False keeps it'
    if real == base:
        return (f'note: learning rate {lr:g} unchanged: the total batch {real} equals '
                f'auto_scale_lr.base_batch_size ({why}).')
    return (f'note: learning rate scaled from {lr:g} to {lr * real / base:g} = {lr:g} x total '
            f'batch {real} ({world_size} process(es) x {cfg.train_dataloader.batch_size}) / '
            f'base {base} ({why}){keep}.')
