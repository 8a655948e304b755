"""Evaluate a checkpoint with the config's test dataloader and evaluator.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--cfg-options k=v]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]
"""
import argparse
import os.path as osp
import sys

from mmtlalign.engine.precision import configure_tf32
from mmtlalign.cli import launch
from mmtlalign.checkpoint.fit import check_checkpoint_fits


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model (mmtlalign).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation log and metrics')
    parser.add_argument('--out', help='also dump the raw predictions to this pickle file')
    launch.add_common_args(parser)
    return launch.parse_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)

    try:
        cfg = launch.load_config(args.config, args.cfg_options)
        configure_tf32(cfg)  # TF32 on Ampere+ unless the config says tf32 = False
        if not osp.isfile(args.checkpoint):
            raise launch.UserInputError(f'checkpoint {args.checkpoint!r} does not exist.')
        cfg.launcher = args.launcher
        cfg.work_dir = launch.default_work_dir(cfg, args.config, args.work_dir)
        cfg.load_from = args.checkpoint
        launch.check_data_roots(cfg, ['test_dataloader'])
        launch.check_coco_classes(cfg, ['test_dataloader'])
        launch.setup_cpu_distributed(cfg, args.launcher)
        runner = launch.build_runner(cfg)
        check_checkpoint_fits(runner.model, args.checkpoint, 'the checkpoint')
        if args.out:
            from mmengine.evaluator import DumpResults
            runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
        metrics = runner.test()
    except launch.UserInputError as e:
        sys.exit(f'error: {e}')
    launch.finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
