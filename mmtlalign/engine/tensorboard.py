"""Log a run to TensorBoard as well (``tools/train.py --tensorboard``).

mmengine writes TensorBoard event files through ``TensorboardVisBackend``; OpenMMLab configs list
only ``LocalVisBackend`` (the JSON scalars the analysis tools read). :func:`add_tensorboard` adds
the TensorBoard backend beside the existing ones, so losses, learning rate, token fluctuation and
validation metrics go to ``<work_dir>/<timestamp>/vis_data/events.out.tfevents.*``
(``tensorboard --logdir work_dirs``). In a config, the same is one line::

    visualizer = dict(vis_backends=[dict(type='LocalVisBackend'),
                                    dict(type='TensorboardVisBackend')])
"""
import importlib.util

from ..errors import UserInputError

TENSORBOARD = 'TensorboardVisBackend'


def check_tensorboard_installed():
    """mmengine's backend imports ``torch.utils.tensorboard``, which needs ``tensorboard``."""
    if importlib.util.find_spec('tensorboard') is None:
        raise UserInputError('TensorBoard logging needs the tensorboard package, which is not '
                             'installed; pip install "mmtlalign[tensorboard]" (or run '
                             'tools/setup_env.sh, which installs the pinned version).')


def add_tensorboard(cfg):
    """Add ``TensorboardVisBackend`` to ``cfg.visualizer.vis_backends`` (keeping the others).

    Args:
        cfg (mmengine.Config): a training config; a config without a visualizer gets
            mmengine's ``Visualizer`` with the local and the TensorBoard backends.

    Returns:
        mmengine.Config: ``cfg``, changed in place.
    """
    check_tensorboard_installed()
    visualizer = cfg.get('visualizer') or dict(type='Visualizer')
    backends = list(visualizer.get('vis_backends') or [dict(type='LocalVisBackend')])
    if not any(str(b.get('type', '')).split('.')[-1] == TENSORBOARD for b in backends):
        backends.append(dict(type=TENSORBOARD))
    visualizer['vis_backends'] = backends
    cfg.visualizer = visualizer
    return cfg
