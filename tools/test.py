"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--cfg-options k=v]
        [--show-dir DIR] [--show [--wait-time S]] [--interval N] [--tta]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]

--show, --show-dir, --wait-time and --tta mean what they mean in the upstream tools/test.py of
the config's task (default_scope mmpretrain, mmdet or mmseg); see mmtlalign/cli/test_options.py.
"""
import argparse
import os.path as osp
import sys

from mmtlalign.checkpoint.fit import check_checkpoint_fits
from mmtlalign.cli import launch, test_options
from mmtlalign.cli.work_dir_lock import hold_work_dir
from mmtlalign.engine.dataset_layout import check_dataset_layout
from mmtlalign.engine.precision import configure_tf32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model (mmtlalign).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation log and metrics')
    parser.add_argument('--out', help='also dump the raw predictions to this pickle file')
    parser.add_argument(
        '--show-dir', help='save the drawn predictions there (mmpretrain: DIR/<image>_0.png; '
        'mmdet: <work_dir>/<timestamp>/DIR/<image>; mmseg: DIR/vis_data/vis_image/)')
    parser.add_argument('--show', action='store_true',
                        help='show each drawn prediction in a window (needs a display)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each --show window stays open (default 2)')
    parser.add_argument('--interval', type=int, default=None,
                        help='draw every N-th sample (mmpretrain default 1; mmdet and mmseg '
                        'keep their hook\'s own)')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation: the config's tta_model and tta_pipeline, else the task's "
        'default (flip; mmseg needs tta_pipeline)')
    launch.add_common_args(parser)
    return launch.parse_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = None
    try:
        cfg = launch.load_config(args.config, args.cfg_options)
        configure_tf32(cfg)  # TF32 on Ampere+ unless the config says tf32 = False
        if not osp.isfile(args.checkpoint):
            raise launch.UserInputError(f'checkpoint {args.checkpoint!r} does not exist.')
        cfg.launcher = args.launcher
        cfg.work_dir = launch.default_work_dir(cfg, args.config, args.work_dir)
        cfg.load_from = args.checkpoint
        test_options.apply_show(cfg, args.show, args.show_dir, args.wait_time, args.interval)
        if args.tta:
            test_options.apply_tta(cfg)
        launch.check_data_roots(cfg, ['test_dataloader'])
        check_dataset_layout(cfg, ['test_dataloader'])
        launch.check_coco_classes(cfg, ['test_dataloader'])
        launch.setup_cpu_distributed(cfg, args.launcher)
        with hold_work_dir(cfg.work_dir):  # one live run (train or test) per work dir
            runner = launch.build_runner(cfg)
            check_checkpoint_fits(runner.model, args.checkpoint, 'the checkpoint',
                                  testing=True)
            if args.out:
                from mmengine.evaluator import DumpResults
                runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
            metrics = runner.test()
    except launch.UserInputError as e:
        sys.exit(f'error: {e}')
    except OSError as e:  # a read-only work dir, a full disk
        message = launch.storage_error(e, cfg and cfg.get('work_dir'))
        if message is None:
            raise
        sys.exit(f'error: {message}')
    launch.finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
