"""A whole suite as one pipeline of Slurm jobs (issue 30, items 1-3), on the real one-node
CPU-only cluster of :mod:`slurm_cluster`.

- The ``fmnist`` suite shrunk (2 arms x 2 seeds, 64 training images, one epoch; evaluation stages
  occlusion, patch shuffle and calibration on the 24 test images) goes out in one call that
  returns within seconds: 4 training jobs, 4 evaluation jobs (``afterok`` on their training job)
  and a report job (``afterany`` on all 8). With no process of ours running, the cluster trains,
  evaluates and writes ``results.md`` with the evaluation tables. One evaluation job is
  pre-empted (``scontrol requeue``) after its first stage: it comes back, skips that stage,
  runs the others and ends with the numbers of an uninterrupted ``tools/analysis/evaluate.py``
  run on the same checkpoint. A rerun submits nothing.
- A request no node can run is refused before anything is queued; a job queued by an earlier run
  that can never start (``PartitionConfig``) is shown as stuck with what it means, ``--wait``
  does not wait on it, and the rerun with other options says that the queued job keeps its own
  and how to replace it.
"""
import json
import os
import os.path as osp
import re
import time

import pytest
from slurm_cluster import PARTITION, SlurmCluster, unavailable, wait_for

import datagen
from helpers import PY, ROOT, ok, run_tool

pytestmark = pytest.mark.skipif(unavailable() is not None,
                                reason=f'no Slurm here: {unavailable()}')
BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
STAGES = ['occlusion', 'patch_shuffle', 'calibration']


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    c = SlurmCluster(str(tmp_path_factory.mktemp('slurm_pipeline')))
    c.start(gres=0)
    yield c
    c.stop()


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
    """The fmnist suite's arms and stages, shrunk to seconds per job."""
    tmp = tmp_path_factory.mktemp('pipeline_data')
    src, root = str(tmp / 'src'), str(tmp / 'fmnist')
    datagen.write_fmnist(src, n_train=64, n_test=24, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    options = {f'{loader}.dataset.data_root': root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_cfg.max_epochs': 1, 'train_dataloader.batch_size': 16,
                    'train_dataloader.dataset.indices': None,
                    'val_dataloader.dataset.indices': None,
                    'test_dataloader.dataset.indices': None,
                    'param_scheduler.0.end': 0.25, 'param_scheduler.1.begin': 0.25})
    path = tmp / 'fmnist_tiny.py'
    path.write_text(f"""
seeds = [0, 1]
arms = [dict(name='cutmix', label='CutMix', config={osp.join(DEMO, 'fmnist_vit_cutmix.py')!r}),
        dict(name='tlalign', label='TL-Align',
             config={osp.join(DEMO, 'fmnist_vit_tlalign.py')!r}, baseline='cutmix')]
cfg_options = {options!r}
evaluation = [dict(kind='occlusion', fractions=[0.25, 0.5]),
              dict(kind='patch_shuffle', grids=[2]),
              dict(kind='calibration')]
""")
    return str(path)


def benchmark(cluster, suite, work, *args, timeout=300):
    return run_tool([PY, BENCHMARK, suite, '--launcher', 'slurm', '--partition', PARTITION,
                     '--gpus-per-node', '0', '--work-dir', work, '--poll', '1', *args],
                    env=cluster.env, timeout=timeout)


def squeue(cluster):
    """``squeue -o '%i %j %T %E %R'``: id, name, state, dependency, reason (or node)."""
    r = cluster.run(['squeue', '-h', '-o', '%i|%j|%T|%E|%R'])
    return [line.split('|') for line in r.stdout.splitlines() if line.strip()]


def table(out):
    """{job name: (id, state)} from the printed table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r'^(\w+ seed \d+(?: -> \w+)?|report)\s+(\d+|-)\s+(\S+)', line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.e2e
@pytest.mark.slow
def test_suite_runs_as_one_pipeline_of_jobs_and_an_evaluation_resumes_after_requeue(
        cluster, suite, tmp_path):
    work = str(tmp_path / 'work')
    t = time.time()
    out = ok(benchmark(cluster, suite, work, '--cpus-per-task', '1'))
    submit_s = time.time() - t
    listing = cluster.run(['squeue', '-o', '%i %j %T %E %R']).stdout
    print(out, f'\nsubmission: {submit_s:.1f} s\n$ squeue -o "%i %j %T %E %R"\n{listing}')
    # (its own time is Python's start-up and planning before the first sbatch: 10-60 s on 2
    # loaded cores; that it did not wait for any job: all 9 are still queued, below)
    assert 'submitted 9 job(s)' in out and submit_s < 120
    rows = table(out)
    assert len(rows) == 9 and all(state == 'pending' for _, state in rows.values())
    jobs = {name: job for name, (job, _) in rows.items()}
    queued = {j: (name, state, dep) for j, name, state, dep, _ in squeue(cluster)}
    # every part of the suite is queued now, nothing has ended
    assert set(queued) == set(jobs.values()), listing
    trains = [f'{arm} seed {seed}' for seed in (0, 1) for arm in ('cutmix', 'tlalign')]
    for cell in trains:
        ev = jobs[f'{cell} -> evaluation']
        assert ev in queued and queued[ev][2].startswith(f'afterok:{jobs[cell]}'), queued
    report = queued[jobs['report']]
    assert report[0].endswith('-report')
    assert sorted(re.findall(r'afterany:(\d+)', report[2])) == sorted(
        j for name, j in jobs.items() if name != 'report')

    # no process of ours runs now; pre-empt one evaluation job after its first stage
    cell = osp.join(work, 'cutmix', 'seed0')
    log = osp.join(cell, 'evaluation', 'evaluate_output.log')
    wait_for(lambda: osp.isfile(log) and 'occlusion: occlusion AUC' in read(log), 300,
             'the first stage of an evaluation job')
    requeue = cluster.run(['scontrol', 'requeue', jobs['cutmix seed 0 -> evaluation']])
    assert requeue.returncode == 0, requeue.stderr
    t = time.time()
    wait_for(lambda: osp.isfile(osp.join(work, 'report_job.json')), 600, 'the report job')
    print(f'after the requeue, every job ended in {time.time() - t:.0f} s')
    assert json.loads(read(osp.join(work, 'report_job.json')))['rc'] == 0, \
        read(osp.join(work, 'report_output.log'))[-3000:]
    md = read(osp.join(work, 'results.md'))
    print(md)
    for name in ('occlusion AUC (occlusion)', 'shuffle 2x2 top-1 (patch_shuffle)',
                 'ECE (calibration)', 'NLL (calibration)'):
        section = md.split(f'## {name}', 1)[1].split('##', 1)[0]
        assert re.search(r'\| CutMix \| [\d.]+, [\d.]+ \(n=2\)', section), section
        assert re.search(r'\| TL-Align \| [\d.]+, [\d.]+ \(n=2\) .* vs CutMix', section), section
    assert 'did not finish' not in md and 'failed' not in md

    # the requeued job ran again, skipped its finished stage, ran the others
    text = read(log)
    restarted = text.split('(restart 1)', 1)
    assert len(restarted) == 2, text[-3000:]
    assert 'occlusion: finished earlier, skipped' in restarted[1], text[-3000:]
    assert 'calibration: running' in restarted[1]
    # ... and ended with the numbers of an uninterrupted evaluation of the same checkpoint
    spec = json.dumps([dict(kind='occlusion', fractions=[0.25, 0.5]),
                       dict(kind='patch_shuffle', grids=[2]), dict(kind='calibration')])
    from mmtlalign.cli.cfg_options import option_args
    marker = json.loads(read(osp.join(cell, 'benchmark_cell.json')))
    ref = str(tmp_path / 'reference')
    ok(run_tool([PY, osp.join(ROOT, 'tools', 'analysis', 'evaluate.py'),
                 osp.join(DEMO, 'fmnist_vit_cutmix.py'), marker['checkpoint'], '--spec', spec,
                 '--work-dir', ref, '--cfg-options',
                 *option_args(marker['settings']['options'])]))
    for stage in STAGES:
        got = json.loads(read(osp.join(cell, 'evaluation', f'{stage}.json')))
        want = json.loads(read(osp.join(ref, f'{stage}.json')))
        assert got['metrics'] == want['metrics'] and got['curves'] == want['curves'], stage

    # a rerun submits nothing and finds every job done
    again = ok(benchmark(cluster, suite, work, '--cpus-per-task', '1'))
    assert 'submitted nothing' in again
    assert {name: state for name, (_, state) in table(again).items()} == \
        {name: 'done' for name in rows}
    assert not squeue(cluster)


@pytest.mark.slow
def test_jobs_that_can_never_start_are_refused_explained_and_not_waited_on(cluster, suite,
                                                                          tmp_path):
    from mmtlalign.benchmark import load_suite
    from mmtlalign.benchmark.cells import plan_cells
    work = str(tmp_path / 'work')
    one = str(tmp_path / 'one.py')
    with open(one, 'w') as f:  # one cell, no evaluation
        f.write(read(suite).split('evaluation =')[0].replace('seeds = [0, 1]', 'seeds = [0]'))
    assert not squeue(cluster)

    # the default --cpus-per-task 5 on a 2-CPU node: refused before anything is queued
    r = benchmark(cluster, one, work, '--arms', 'cutmix')
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert 'at most 2 CPUs per node' in lines[0] and 'PartitionConfig' in lines[0] and \
        lines[0].endswith('pass --cpus-per-task 2.')
    r = benchmark(cluster, one, work, '--arms', 'cutmix', '--cpus-per-task', '1',
                  '--slurm-args=--mem=64G')
    assert r.returncode != 0 and 'at most 1000 MB of memory per node' in r.stderr
    assert not squeue(cluster)

    # a job an earlier version queued with --cpus-per-task 5: pending (PartitionConfig) forever
    [cell] = plan_cells(load_suite(one, arms=['cutmix']), osp.abspath(work))
    os.makedirs(cell.work_dir)
    script = osp.join(cell.work_dir, 'benchmark_job.sh')
    with open(script, 'w') as f:
        f.write('#!/usr/bin/env bash\nexit 0\n')
    argv = ['sbatch', '--parsable', f'--job-name={cell.arm}-s0', f'--partition={PARTITION}',
            '--ntasks=1', '--cpus-per-task=5', '--requeue', '--signal=USR1@180']
    r = cluster.run([*argv, script])
    old = r.stdout.strip()
    assert r.returncode == 0 and old.isdigit(), r.stderr
    with open(osp.join(cell.work_dir, 'benchmark_cell.json'), 'w') as f:
        json.dump(dict(status='submitted', settings=cell.settings(),
                       slurm=dict(job_id=old, command=' '.join([*argv, script]),
                                  history=[])), f)
    wait_for(lambda: any(j == old and reason == '(PartitionConfig)'
                         for j, _, _, _, reason in squeue(cluster)), 30, 'PartitionConfig')

    t = time.time()
    r = benchmark(cluster, one, work, '--arms', 'cutmix', '--cpus-per-task', '1', '--wait')
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode != 0 and time.time() - t < 60, 'waited on a job that never starts'
    assert table(out)['cutmix seed 0'] == (old, 'stuck')
    assert f'job {old} pending (PartitionConfig) can never start: it asks for more than a ' \
        'node of the partition has' in out
    assert f'not waited on: scancel {old}' in out
    assert '1 queued job(s) were submitted with other options than this command\'s: ' \
        '--cpus-per-task=5 (now --cpus-per-task=1)' in out
    assert f'To replace them: scancel {old}, then run this command again' in out
    assert 'submitted nothing' in out and [j for j, *_ in squeue(cluster)] == [old]

    # replaced as told: the rerun submits the cell with this run's options
    cluster.run(['scancel', old])
    wait_for(lambda: not squeue(cluster), 30, 'the cancelled job to leave the queue')
    out = ok(benchmark(cluster, one, work, '--arms', 'cutmix', '--cpus-per-task', '1',
                       '--slurm-args=--hold'))  # (held: cancelled below before it starts)
    new = table(out)['cutmix seed 0'][0]
    slurm = json.loads(read(osp.join(cell.work_dir, 'benchmark_cell.json')))['slurm']
    assert new != old and slurm['history'] == [old] and '--cpus-per-task=1' in slurm['command']
    for job, *_ in squeue(cluster):
        cluster.run(['scancel', job])
    cluster.wait_idle()


@pytest.mark.slow
def test_dry_run_prints_every_jobs_script_with_gres_only_where_the_partition_has_gpus(
        cluster, suite, tmp_path):
    def dry_run(*args):
        out = ok(benchmark(cluster, suite, str(tmp_path / 'work'), '--dry-run', *args))
        return dict(re.findall(r'^# (.+?): sbatch --parsable (.*) <<', out, re.M)), out

    opts, out = dry_run('--cpus-per-task', '1')  # (CPU-only: --gpus-per-node 0)
    assert list(opts) == ['cutmix seed 0', 'tlalign seed 0', 'cutmix seed 1', 'tlalign seed 1',
                          'cutmix seed 0 -> evaluation', 'tlalign seed 0 -> evaluation',
                          'cutmix seed 1 -> evaluation', 'tlalign seed 1 -> evaluation',
                          'report']
    evaluation = opts['cutmix seed 0 -> evaluation']
    assert "'--dependency=afterok:<job of cutmix seed 0>'" in evaluation
    assert '--ntasks=1 --cpus-per-task=1 --requeue' in evaluation
    assert opts['report'].count('<job of') == 8 and '--dependency=afterany:' in opts['report']
    assert not any('--gres' in o for o in opts.values())
    assert 'tools/analysis/evaluate.py' in out and '--report' in out
    assert not os.path.exists(tmp_path / 'work')

    cluster.restart(gres=2)  # the node pretends to have 2 GPUs
    try:
        opts, _ = dry_run('--gpus', '2', '--gpus-per-node', '2', '--cpus-per-task', '1')
    finally:
        cluster.restart(gres=0)
    assert '--gres=gpu:2' in opts['cutmix seed 0']
    assert '--gres=gpu:1' in opts['cutmix seed 0 -> evaluation']
    assert '--gres' not in opts['report']


def test_a_report_written_while_stages_failed_says_which(tmp_path):
    """What the report job writes when a training cell and an evaluation stage failed: the
    numbers of the rest, and lines naming what is missing and where its error is."""
    from mmtlalign.benchmark import load_suite
    from mmtlalign.benchmark.cells import Cell
    from mmtlalign.benchmark.report import aggregate, summarise, write_all
    path = tmp_path / 'suite.py'
    path.write_text(f"""seeds = [0, 1]
arms = [dict(name='cutmix', config={osp.join(DEMO, 'fmnist_vit_cutmix.py')!r}),
        dict(name='tlalign', config={osp.join(DEMO, 'fmnist_vit_tlalign.py')!r},
             baseline='cutmix')]
evaluation = [dict(kind='occlusion', fractions=[0.5]), dict(kind='calibration')]
""")
    suite, work = load_suite(str(path)), str(tmp_path / 'work')
    cells = []
    for arm in ('cutmix', 'tlalign'):
        for seed in (0, 1):
            train = Cell(arm=arm, seed=seed, stage='train', config='c.py', options={},
                         work_dir=osp.join(work, arm, f'seed{seed}'), metrics=suite.metrics[:1])
            failed = arm == 'tlalign' and seed == 1  # its training failed
            train.state = 'new' if failed else 'done'
            train.result = {} if failed else dict(metrics={'top-1': 60.0 + seed + len(arm)})
            cells.append(train)
            if failed:
                continue
            for stage in suite.evaluation:
                cell = Cell(arm=arm, seed=seed, stage=stage.name, config='c.py', options={},
                            work_dir=osp.join(train.work_dir, 'evaluation'),
                            metrics=stage.metrics, parent=train)
                if stage.kind == 'occlusion':  # done everywhere
                    top1 = [50.0 + seed, 40.0 + seed + len(arm)]
                    cell.state, cell.result = 'done', dict(
                        metrics={'occlusion AUC': top1[1]},
                        curves=dict(fraction=[0.0, 0.5], top1=top1))
                else:  # calibration failed in every evaluation job
                    cell.state = 'failed'
                cells.append(cell)
    results = aggregate(suite, cells, work)
    results['evaluation'] = summarise(suite, cells)
    write_all(results, work)
    md = read(osp.join(work, 'results.md'))
    assert '| tlalign | 47.00 (n=1)' in md and '| cutmix | 46.00, 47.00 (n=2)' in md
    assert f'- tlalign seed 1: training did not finish, not in the numbers (nor its ' \
        f'evaluation); the error is in {work}/tlalign/seed1/benchmark_output.log' in md
    assert '- evaluation stage calibration: failed for cutmix seed 0, cutmix seed 1, tlalign ' \
        'seed 0, not in the numbers; the error is in <cell>/evaluation/evaluate_output.log' in md
    assert results['evaluation']['failed'] == {
        'calibration': ['cutmix seed 0', 'cutmix seed 1', 'tlalign seed 0']}
    assert osp.getsize(osp.join(work, 'results.png')) > 10_000
