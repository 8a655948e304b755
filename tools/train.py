"""Train a model from a config (classification, detection or segmentation; the config's
``default_scope`` decides). The usual OpenMMLab arguments; see README "Training".

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v]
    tools/dist_train.sh CONFIG GPUS [args]          # torchrun, one node or NNODES nodes
"""
import os
import signal

# In a Slurm job a warning signal may come while torch is still importing, and its default
# action would kill us: note it (mmtlalign.engine.preemption acts on it once training starts).
_EARLY_SIGNALS = []
if 'SLURM_JOB_ID' in os.environ:
    for _sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(_sig, lambda num, frame: _EARLY_SIGNALS.append(signal.Signals(num).name))

import argparse  # noqa: E402
import sys  # noqa: E402

from mmtlalign.checkpoint.fit import check_checkpoint_fits  # noqa: E402
from mmtlalign.cli import launch  # noqa: E402
from mmtlalign.cli.work_dir_lock import hold_work_dir  # noqa: E402
from mmtlalign.engine.data_checks import DataError  # noqa: E402
from mmtlalign.engine.dataset_layout import check_dataset_layout  # noqa: E402
from mmtlalign.engine.lr_scaling import lr_scaling_note  # noqa: E402
from mmtlalign.engine.precision import configure_tf32  # noqa: E402
from mmtlalign.engine.preemption import add_preemption_hook  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmtlalign).')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or with no value from the latest checkpoint of the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (CUDA only)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by actual/base batch size (auto_scale_lr.base_batch_size)')
    parser.add_argument('--tensorboard', action='store_true',
                        help='also log to TensorBoard (<work_dir>/<timestamp>/vis_data)')
    launch.add_common_args(parser)
    return launch.parse_args(parser, argv)


def main(argv=None):
    from mmtlalign.engine import run_options  # compile=True -> CompileRunner; --tensorboard
    args = parse_args(argv)
    cfg = None
    try:
        cfg = launch.load_config(args.config, args.cfg_options)
        run_options.apply(cfg, tensorboard=args.tensorboard)
        # in a Slurm job: SIGUSR1/SIGTERM save and exit for requeue
        add_preemption_hook(cfg, seen=_EARLY_SIGNALS)
        configure_tf32(cfg)  # TF32 on Ampere+ unless the config says tf32 = False
        cfg.launcher = args.launcher
        cfg.work_dir = launch.default_work_dir(cfg, args.config, args.work_dir)
        if args.amp:
            launch.enable_amp(cfg)
        if args.auto_scale_lr:
            if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
                raise launch.UserInputError(
                    '--auto-scale-lr needs auto_scale_lr.base_batch_size in the config.')
            cfg.auto_scale_lr.enable = True
        if args.no_validate:
            cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        launch.resolve_resume(cfg, args.resume)
        launch.check_schedule(cfg)
        launch.check_optimizer(cfg)
        loaders = ['train_dataloader']
        if cfg.get('val_cfg') is not None:
            loaders.append('val_dataloader')
        launch.check_data_roots(cfg, loaders)
        check_dataset_layout(cfg, loaders)  # no train/ folder, no class folders: one line
        launch.check_coco_classes(cfg, loaders)
        launch.setup_cpu_distributed(cfg, args.launcher)
        with hold_work_dir(cfg.work_dir):
            runner = launch.build_runner(cfg)
            note = lr_scaling_note(cfg, runner.world_size, from_flag=args.auto_scale_lr)
            if note:  # auto_scale_lr: the lr before and after, in one line, never silent
                runner.logger.info(note)
            checkpoint = launch.checkpoint_to_load(cfg)
            if checkpoint:
                check_checkpoint_fits(runner.model, *checkpoint)
            runner.train()
    except (launch.UserInputError, DataError) as e:  # also raised by components during the run
        sys.exit(f'error: {e}')
    except OSError as e:  # a read-only work dir, a full disk
        message = launch.storage_error(e, cfg and cfg.get('work_dir'))
        if message is None:
            raise
        sys.exit(f'error: {message}')
    launch.finish_distributed()


if __name__ == '__main__':
    main()
