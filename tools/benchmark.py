"""Run a benchmark suite: every arm × seed (and downstream task) of a suite config, then the
per-arm mean ± std and the paired differences with 95% confidence intervals.

    python tools/benchmark.py SUITE [--seeds 0 1 2] [--arms cutmix tlalign] [--work-dir DIR]
        [--cfg-options k=v ...] [--gpus N | --launcher slurm --partition P] [--dry-run]
    python tools/benchmark.py SUITE --launcher slurm --partition P --gpus N [--gpus-per-node G]
        [--cpus-per-task C] [--time HH:MM:SS] [--slurm-args "--account=A"] [--max-jobs K] [--wait]

SUITE is a file or a name in configs/benchmarks/ (fmnist, imagenet_deit-s, imagenet_swin-t,
downstream_swin-t). Each cell trains through tools/train.py (``--gpus N``: tools/dist_train.sh)
in ``WORK/<arm>/seed<seed>``; finished cells are skipped and interrupted ones resumed when run
again. Writes WORK/results.{json,md,png}.

``--launcher slurm`` submits the whole suite at once and returns: every cell its own sbatch job
running tools/slurm_train.sh, each cell's evaluation stages a job after it, and a report job
after all of them that writes the results (``--report``). Run the same command again for every
job's state (failed or vanished jobs are resubmitted), ``--wait`` to block until all have ended.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Run a benchmark suite (arms x seeds) and '
                                'aggregate it with paired confidence intervals.')
    p.add_argument('suite', help='suite file, or a name in configs/benchmarks/')
    p.add_argument('--seeds', nargs='+', type=int, help="replace the suite's seeds")
    p.add_argument('--arms', nargs='+', help='run only these arms (by name)')
    p.add_argument('--work-dir', help='root of the cells\' work dirs and the results '
                   '(default: work_dirs/benchmarks/<suite>)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='config overrides applied to every training cell, key=value')
    p.add_argument('--downstream-cfg-options', nargs='+', action=DictAction, default={},
                   help='config overrides applied to every downstream cell, key=value')
    p.add_argument('--gpus', type=int, default=1,
                   help='GPUs per cell; > 1 launches through tools/dist_train.sh (torchrun)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                   help='none: tools/train.py (or torchrun with --gpus > 1); slurm: every '
                   'cell its own sbatch job (tools/slurm_train.sh inside), submitted at once')
    p.add_argument('--partition', help='slurm partition (with --launcher slurm)')
    p.add_argument('--gpus-per-node', type=int, default=8,
                   help='slurm: GPUs (processes) per node; 0 on a CPU-only cluster')
    p.add_argument('--cpus-per-task', type=int, default=5, help='slurm: CPUs per process')
    p.add_argument('--time', help='slurm: time limit of each job, [DAYS-]HH:MM:SS (training '
                   'saves and requeues itself shortly before it)')
    p.add_argument('--slurm-args', default='',
                   help='slurm: more sbatch options, given with = since they start with --: '
                   '--slurm-args="--account=A --qos=Q"')
    p.add_argument('--max-jobs', type=int, help='slurm: at most this many jobs queued at once')
    p.add_argument('--wait', action='store_true', help='slurm: wait until every cell has '
                   'ended, then write the results')
    p.add_argument('--poll', type=float, default=30.0, help='slurm --wait: seconds between '
                   'looks at the queue')
    p.add_argument('--port', type=int, help='torchrun master port (PORT of dist_train.sh)')
    p.add_argument('--jobs', type=int, default=1,
                   help='cells run side by side on this machine (CPU: one per core trains '
                   'small models fastest)')
    p.add_argument('--dry-run', action='store_true',
                   help='print the command of every cell that would run (slurm: the script of '
                   'every job), and run nothing')
    p.add_argument('--report', action='store_true',
                   help='slurm: what the suite\'s report job runs once every other job has '
                   'ended: collect what they left and write the results (naming what failed); '
                   'submits nothing')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmtlalign.benchmark.launch import stop_on_sigterm
    stop_on_sigterm()
    from mmtlalign.benchmark import Launcher, load_suite, run_suite, table_rows, text_table
    from mmtlalign.benchmark.slurm import log_path
    from mmtlalign.errors import UserInputError
    try:
        suite = load_suite(args.suite, arms=args.arms, seeds=args.seeds)
        kind = 'slurm' if args.launcher == 'slurm' else \
            'pytorch' if args.launcher == 'pytorch' or args.gpus > 1 else 'local'
        launcher = Launcher(kind=kind, gpus=args.gpus, gpus_per_node=args.gpus_per_node,
                            partition=args.partition, port=args.port,
                            cpus_per_task=args.cpus_per_task, time=args.time,
                            slurm_args=args.slurm_args)
        work_dir = args.work_dir or osp.join('work_dirs', 'benchmarks', suite.name)
        results, failed, _ = run_suite(suite, work_dir, launcher, args.cfg_options,
                                       args.downstream_cfg_options, dry_run=args.dry_run,
                                       jobs=args.jobs, max_jobs=args.max_jobs, wait=args.wait,
                                       poll=args.poll, report=args.report)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        sys.exit('interrupted; run the same command again to resume the unfinished cells.')
    if results is None:
        if failed:  # slurm, not waiting: they were shown and resubmitted
            print(f'{len(failed)} cell(s) failed before this run: ' +
                  ', '.join(c.name for c in failed))
        return None
    for metric in results['metrics']:
        print(f'\n{metric["name"]}' + ('' if metric['stage'] == 'train'
                                       else f' ({metric["stage"]})'))
        print(text_table(*table_rows(results, metric)))
    print('\n' + results['verdict'])
    print('results: ' + ', '.join(osp.relpath(p) for p in results['files'].values()))
    if failed:
        logs = '; '.join(f'{c.name}: {osp.relpath(log_path(c))}' for c in failed)
        message = (f'{len(failed)} cell(s) failed, their errors in: {logs}; the results above '
                   'leave them out')
        if args.report:  # the report is written: the report job itself succeeded
            print(f'note: {message}.')
            return results
        sys.exit(f'error: {message}; run the same command again to run them again.')
    return results


if __name__ == '__main__':
    main()
