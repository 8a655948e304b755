"""The launchers and the benchmark on a real Slurm (issue 19).

A one-node cluster on 127.0.0.1 (:mod:`slurm_cluster`: Debian's slurmctld/slurmd/munge, installed
with apt when missing, own state dir and SLURM_CONF) runs, as a user would:

- ``tools/slurm_train.sh`` with 2 tasks (gloo) on a CPU-only cluster, bitwise equal to
  ``tools/dist_train.sh`` and to a 2-"node" torchrun; on a cluster with (fake) GPU GRES;
  ``tools/slurm_test.sh``; resume after ``scancel``;
- ``tools/benchmark.py --launcher slurm``: a 2 arms x 2 seeds suite submitted as 4 batch jobs
  that run side by side, a rerun that submits nothing, ``--max-jobs``, ``--wait``; a downstream
  cell held by ``afterok``; a failing cell shown with its reason and resubmitted;
- pre-emption: a cell requeued with ``scontrol requeue`` in the middle of training ends bitwise
  equal to an uninterrupted one (the requeued job resumes from the checkpoint the signal saved).

Training is a tiny TL-Align ViT (the DeiT-S recipe, its hooks included) on a 32 px ImageNet-layout
folder, deterministic. A test-only hook (``SLOW_SECONDS``) makes iterations last long enough
for the scheduler to act during training. Skipped only where neither Slurm nor root + apt
exists.
"""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import time

import pytest
import torch
from slurm_cluster import PARTITION, SlurmCluster, unavailable, wait_for

import datagen
from helpers import PY, ROOT, free_port, ok, run_tool

pytestmark = pytest.mark.skipif(unavailable() is not None,
                                reason=f'no Slurm here: {unavailable()}')
BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')

CONFIG = """
_base_ = {base!r}
custom_imports = dict(imports=['mmtlalign', 'slurmtest_hooks'], allow_failed_imports=False)
DATA = {data!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=3,
                            feedforward_channels=96),
                  img_size=32, patch_size=8, drop_path_rate=0.1),
    head=dict(in_channels=48, num_classes=4))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=DATA, pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=DATA, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=1)
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=8, val_interval=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=2, end=8, eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=2, by_epoch=False, max_keep_ckpts=2),
                     logger=dict(interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
custom_hooks = [dict(type='ExactResumeHook'), dict(type='NonFiniteLossHook'),
                dict(type='SlowHook')]
"""

HOOKS = '''
"""Test-only hook: sleep SLOW_SECONDS after every training iteration."""
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SlowHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(float(os.environ.get('SLOW_SECONDS', '0')))
'''


class Env:
    def __init__(self, tmp, cluster):
        self.tmp, self.cluster = tmp, cluster
        self.data = datagen.make_imagenet(osp.join(tmp, 'data'), per_class=4, size=40)
        self.hooks = osp.join(tmp, 'hooks')
        os.makedirs(self.hooks)
        with open(osp.join(self.hooks, 'slurmtest_hooks.py'), 'w') as f:
            f.write(HOOKS)
        self.tlalign = self.config('tlalign', 'deit-s_8xb128.py')
        self.cutmix = self.config('cutmix', 'deit-s_8xb128_cutmix.py')
        self._reference = {}

    def config(self, name, recipe):
        path = osp.join(self.tmp, f'{name}.py')
        with open(path, 'w') as f:
            f.write(CONFIG.format(base=osp.join(ROOT, 'configs', 'tlalign', recipe),
                                  data=self.data))
        return path

    def environ(self, **extra):
        return dict(self.cluster.env, PYTHONPATH=f'{ROOT}:{self.hooks}', PYTHON=PY,
                    CPUS_PER_TASK='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', **extra)
        # (one BLAS thread everywhere: the bitwise comparisons need the same kernels as the
        # reference run, whatever the caller's environment -- run_tests.sh exports 2)

    def run(self, args, timeout=600, **extra):
        return run_tool(args, env=self.environ(**extra), timeout=timeout)

    def popen(self, args, **extra):
        return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, **self.environ(**extra)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def slurm_train(self, job, work, *args, **extra):
        return self.run(['bash', osp.join(ROOT, 'tools', 'slurm_train.sh'), PARTITION, job,
                         self.tlalign, work, *args], **extra)

    def reference(self):
        """tools/dist_train.sh CONFIG 2 (torchrun, no Slurm): the run the others must equal."""
        if 'dist' not in self._reference:
            work = osp.join(self.tmp, 'ref_dist')
            ok(self.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), self.tlalign, '2',
                         '--work-dir', work], PORT=free_port()))
            self._reference['dist'] = work
        return self._reference['dist']

    def benchmark(self, suite, work, *args, timeout=600, **extra):
        return self.run([PY, BENCHMARK, suite, '--launcher', 'slurm', '--partition', PARTITION,
                         '--gpus', '1', '--gpus-per-node', '1', '--cpus-per-task', '1',
                         '--work-dir', work, '--poll', '1', *args], timeout=timeout, **extra)

    def suite(self, name, seeds=(0, 1), arms=None, downstream=''):
        arms = arms or [dict(name='cutmix', config=self.cutmix),
                        dict(name='tlalign', config=self.tlalign, baseline='cutmix')]
        path = osp.join(self.tmp, f'{name}.py')
        with open(path, 'w') as f:
            f.write(f'seeds = {list(seeds)}\nmetrics = ["top-1"]\narms = {arms!r}\n{downstream}')
        return path


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    c = SlurmCluster(str(tmp_path_factory.mktemp('slurm')))
    t = time.time()
    c.start(gres=0)
    print(f'slurm cluster up in {time.time() - t:.1f} s')
    yield c
    c.stop()


@pytest.fixture(scope='module')
def env(tmp_path_factory, cluster):
    return Env(str(tmp_path_factory.mktemp('slurmrun')), cluster)


@pytest.fixture
def cpu_cluster(cluster):
    cluster.restart(gres=0)
    yield cluster
    cluster.wait_idle()


def load(path):
    from mmtlalign.checkpoint.loader import load_checkpoint_file
    return load_checkpoint_file(path, map_location='cpu')


def assert_same_training(path_a, path_b, keys=('state_dict', 'optimizer', 'param_schedulers')):
    a, b = load(path_a), load(path_b)
    assert a['meta']['iter'] == b['meta']['iter']
    for key in keys:
        _same(a[key], b[key], key)


def _same(a, b, where):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), \
            f'{where} differs'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys differ'
        for k in a:
            _same(a[k], b[k], f'{where}/{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{where}: lengths differ'
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def squeue(cluster):
    r = cluster.run(['squeue', '-h', '-o', '%i|%j|%T|%r'])
    return [line.split('|') for line in r.stdout.splitlines() if line.strip()]


# no periodic checkpoint before the end: what a restarted job resumes from is its save at the
# signal
NO_PERIODIC_CHECKPOINT = "cfg_options = {'default_hooks.checkpoint.interval': 100}\n"


def markers(work):
    out = {}
    for path in sorted(glob.glob(osp.join(work, '*', '*', 'benchmark_cell.json'))):
        with open(path) as f:
            out[osp.relpath(osp.dirname(path), work)] = json.load(f)
    return out


# --------------------------------------------------------------------------------------------
# the launchers
# --------------------------------------------------------------------------------------------
def test_launchers_refuse_an_option_in_the_work_dir_position():
    for script, args, what in (('slurm_train.sh', ['p', 'j', 'c.py', '--resume'], 'WORK_DIR'),
                               ('slurm_train.sh', ['p', 'j', 'c.py'], 'WORK_DIR'),
                               ('slurm_test.sh', ['p', 'j', 'c.py', '--out'], 'CHECKPOINT')):
        r = subprocess.run(['bash', osp.join(ROOT, 'tools', script), *args],
                           capture_output=True, text=True)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and 'usage: tools/' + script in lines[0], \
            r.stderr
        if args[-1].startswith('-'):
            assert f"'{args[-1]}' is in the {what} position" in lines[0]


@pytest.mark.e2e
@pytest.mark.slow
def test_slurm_train_two_tasks_on_a_cpu_only_cluster_equals_torchrun(env, cpu_cluster):
    work = osp.join(env.tmp, 'cpu2')
    t = time.time()
    out = ok(env.slurm_train('cpu2', work, GPUS='2'))  # GPUS_PER_NODE defaults to min(2, 8)
    print(f'slurm_train.sh 2 tasks on the CPU-only cluster: {time.time() - t:.1f} s')
    assert 'Invalid generic resource' not in out
    dumped = open(osp.join(work, 'tlalign.py')).read()
    assert "backend='gloo'" in dumped
    with open(glob.glob(osp.join(work, '*', '*.log'))[0]) as f:
        log = f.read()
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log  # world size
    # (the two processes together trained what torchrun's two did, bit for bit)
    assert_same_training(osp.join(env.reference(), 'iter_8.pth'), osp.join(work, 'iter_8.pth'))


@pytest.mark.e2e
@pytest.mark.slow
def test_two_node_torchrun_on_localhost_equals_one_node(env):
    work = osp.join(env.tmp, 'twonode')
    port = free_port()
    procs = [env.popen(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), env.tlalign, '1',
                        '--work-dir', work], NNODES='2', NODE_RANK=str(rank),
                       MASTER_ADDR='127.0.0.1', PORT=port) for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert_same_training(osp.join(env.reference(), 'iter_8.pth'), osp.join(work, 'iter_8.pth'))


@pytest.mark.e2e
@pytest.mark.slow
def test_slurm_train_with_gpu_gres_and_slurm_test(env, cluster):
    cluster.restart(gres=2)
    try:
        work = osp.join(env.tmp, 'gres2')
        ok(env.slurm_train('gres2', work, GPUS='2', GPUS_PER_NODE='2'))
        # the job step asked for (and got) the node's 2 GPUs
        r = cluster.run(['scontrol', 'show', 'job', '-o'])
        job = next(line for line in r.stdout.splitlines() if 'JobName=gres2' in line)
        assert 'TresPerNode=gres:gpu:2' in job, job
        assert_same_training(osp.join(env.reference(), 'iter_8.pth'),
                             osp.join(work, 'iter_8.pth'))

        # slurm_test.sh (2 tasks) reports what tools/test.py (1 process) reports
        ckpt = osp.join(work, 'iter_8.pth')
        out = ok(env.run(['bash', osp.join(ROOT, 'tools', 'slurm_test.sh'), PARTITION,
                          'test2', env.tlalign, ckpt, '--work-dir', osp.join(env.tmp, 't2')],
                         GPUS='2', GPUS_PER_NODE='2'))
        local = ok(env.run([PY, osp.join(ROOT, 'tools', 'test.py'), env.tlalign, ckpt,
                            '--work-dir', osp.join(env.tmp, 't1')]))
        acc = [re.findall(r'accuracy/top1: ([\d.]+)', o) for o in (out, local)]
        assert acc[0] and acc[0][-1] == acc[1][-1], (out[-2000:], local[-2000:])

        # GPUS_PER_NODE=0: no GPUs asked for even here, the tasks run on the CPUs
        work0 = osp.join(env.tmp, 'gres0')
        ok(env.slurm_train('gpn0', work0, '--cfg-options', 'train_cfg.max_iters=2',
                           'train_cfg.val_interval=2', GPUS='2', GPUS_PER_NODE='0'))
        r = cluster.run(['scontrol', 'show', 'job', '-o'])
        job = next(line for line in r.stdout.splitlines() if 'JobName=gpn0' in line)
        assert 'gres:gpu' not in job, job
    finally:
        cluster.restart(gres=0)


@pytest.mark.e2e
@pytest.mark.slow
def test_slurm_train_resumes_bitwise_after_scancel(env, cpu_cluster):
    work = osp.join(env.tmp, 'scancel')
    proc = env.popen(['bash', osp.join(ROOT, 'tools', 'slurm_train.sh'), PARTITION, 'scancel',
                      env.tlalign, work], GPUS='2', SLOW_SECONDS='1')
    wait_for(lambda: osp.isfile(osp.join(work, 'iter_4.pth')), 300, 'iter_4.pth')
    assert cpu_cluster.run(['scancel', '--name', 'scancel']).returncode == 0
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-2000:]
    assert not osp.isfile(osp.join(work, 'iter_8.pth'))
    cpu_cluster.wait_idle()
    out = ok(env.slurm_train('scancel', work, '--resume', GPUS='2'))
    assert 'resumed' in out.lower()
    assert_same_training(osp.join(env.reference(), 'iter_8.pth'), osp.join(work, 'iter_8.pth'))


# --------------------------------------------------------------------------------------------
# the benchmark: each cell its own batch job
# --------------------------------------------------------------------------------------------
def table_jobs(out):
    """{cell name: (job id, state)} from the printed table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r'^(\w+ seed \d+(?: -> \w+)?)\s+(\d+|-)\s+(\S+)', line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


@pytest.mark.e2e
@pytest.mark.slow
def test_benchmark_submits_every_cell_as_a_job(env, cpu_cluster):
    suite, work = env.suite('tiny'), osp.join(env.tmp, 'bench')
    t = time.time()
    # (3 s a training iteration: the cells are still queued or running when looked at again)
    out = ok(env.benchmark(suite, work, '--max-jobs', '3', SLOW_SECONDS='3'))
    submit_s = time.time() - t
    print(out)
    rows = table_jobs(out)
    assert len(rows) == 4 and 'submitted 3 job(s)' in out
    queued = {k: v for k, v in rows.items() if v[0] != '-'}
    assert len(queued) == 3 and all(v[1] in ('pending', 'running') for v in queued.values())
    # it did not wait for training: the 3 jobs (>= 24 s each, 2 at a time) are all still queued
    # when it returns. Its own time is Python's start-up, planning and a few Slurm commands
    # before the first sbatch: 10-60 s on 2 loaded cores, hence the loose bound
    assert len([j for j, _, s, _ in squeue(cpu_cluster) if s in ('PENDING', 'RUNNING')]) == 3
    assert submit_s < 120, f'submission took {submit_s:.0f} s: it must not wait for training'
    for rel, marker in markers(work).items():
        job = marker['slurm']['job_id']
        assert marker['status'] == 'submitted' and marker['slurm']['command'].startswith(
            'sbatch --parsable')
        assert job in {v[0] for v in queued.values()}

    # two 1-CPU cells run side by side on the 2-CPU node
    wait_for(lambda: sum(s == 'RUNNING' for _, _, s, _ in squeue(cpu_cluster)) == 2, 120,
             'two cells running at once')

    # again while they are queued or running: nothing is submitted, same job ids
    again = ok(env.benchmark(suite, work, '--max-jobs', '3'))
    print(again)
    assert 'submitted nothing' in again
    assert {k: v[0] for k, v in table_jobs(again).items()} == {k: v[0] for k, v in
                                                              rows.items()}

    # --wait: submits the fourth cell, waits for all, writes the results
    t = time.time()
    done = ok(env.benchmark(suite, work, '--wait', timeout=900))
    print(done)
    print(f'--wait: {time.time() - t:.0f} s')
    final = table_jobs(done)
    assert all(v[1] == 'done' for v in final.values()), done
    with open(osp.join(work, 'results.json')) as f:
        results = json.load(f)
    assert all(c['state'] == 'done' for c in results['cells']) and len(results['cells']) == 4
    for cell in results['cells']:  # the metric is the cell's own last validation
        with open(glob.glob(osp.join(cell['work_dir'], '*', 'vis_data', 'scalars.json'))[0]) \
                as f:
            last = [json.loads(line) for line in f if 'accuracy/top1' in line][-1]
        assert cell['metrics']['top-1'] == pytest.approx(last['accuracy/top1'])
    assert osp.isfile(osp.join(work, 'results.md'))
    # and a later run finds everything done: no submission, the same results
    later = ok(env.benchmark(suite, work))
    assert 'submitted nothing' in later and 'tlalign - cutmix' in later


@pytest.mark.e2e
@pytest.mark.slow
def test_benchmark_downstream_waits_for_its_training_cell_and_failures_resubmit(env,
                                                                                  cpu_cluster):
    # a "downstream" stage that fine-tunes from the training cell's checkpoint (load_from)
    downstream = (f"downstream = [dict(name='ft', config={env.tlalign!r}, metrics=['top-1'], "
                  "checkpoint_key='load_from', cfg_options={'train_cfg.max_iters': 2, "
                  "'train_cfg.val_interval': 2})]\n")
    arms = [dict(name='tlalign', config=env.tlalign),
            dict(name='broken', config=env.tlalign,
                 cfg_options={'train_dataloader.dataset.data_root': '/nonexistent/data'})]
    suite, work = env.suite('chain', seeds=(0,), arms=arms, downstream=downstream), \
        osp.join(env.tmp, 'chain')
    out = ok(env.benchmark(suite, work))
    print(out)
    rows = table_jobs(out)
    parent, child = rows['tlalign seed 0'][0], rows['tlalign seed 0 -> ft'][0]
    cmd = markers(work)['tlalign/seed0-ft']['slurm']['command']
    assert f'--dependency=afterok:{parent}' in cmd
    wait_for(lambda: any(j == child and s == 'PENDING' and r == 'Dependency'
                         for j, _, s, r in squeue(cpu_cluster)), 60, 'the held downstream job')

    done = env.benchmark(suite, work, '--wait', timeout=900)
    print(done.stdout)
    assert done.returncode != 0  # the broken cells failed
    text = done.stdout + done.stderr
    final = table_jobs(done.stdout)
    assert final['tlalign seed 0'][1] == 'done' and final['tlalign seed 0 -> ft'][1] == 'done'
    assert final['broken seed 0'][1] == 'failed'
    assert 'exit code 1' in text and '/nonexistent/data' in text  # the reason and the log tail
    # the downstream cell started from its training cell's last checkpoint
    ft_log = open(osp.join(work, 'tlalign', 'seed0-ft', 'benchmark_output.log')).read()
    assert f"Load checkpoint from {osp.join(work, 'tlalign', 'seed0', 'iter_8.pth')}" in ft_log
    # the downstream of the failed cell never ran; a rerun resubmits the failed cell
    old = markers(work)['broken/seed0']['slurm']['job_id']
    again = ok(env.benchmark(suite, work))
    new = table_jobs(again)['broken seed 0'][0]
    assert new != old and new != '-'
    assert old in markers(work)['broken/seed0']['slurm']['history']
    cpu_cluster.run(['scancel', '--name', 'broken-s0'])
    cpu_cluster.run(['scancel', '--name', 'broken-s0-ft'])


# --------------------------------------------------------------------------------------------
# pre-emption
# --------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.slow
def test_requeued_cell_ends_bitwise_equal_to_an_uninterrupted_one(env, cpu_cluster):
    arms = [dict(name='tlalign', config=env.tlalign)]
    # no periodic checkpoint before the end: what the requeued job resumes from is the save
    # that the signal made
    suite = env.suite('one', seeds=(0,), arms=arms,
                      downstream=NO_PERIODIC_CHECKPOINT)
    full, requeued = osp.join(env.tmp, 'uninterrupted'), osp.join(env.tmp, 'requeued')
    ok(env.benchmark(suite, full))
    out = ok(env.benchmark(suite, requeued, SLOW_SECONDS='1.5'))  # sbatch exports it
    job = table_jobs(out)['tlalign seed 0'][0]
    cell = osp.join(requeued, 'tlalign', 'seed0')
    log_path = osp.join(cell, 'benchmark_output.log')
    wait_for(lambda: osp.isfile(log_path) and 'Iter(train) [3/8]' in open(log_path).read(),
             300, 'iteration 3')
    assert cpu_cluster.run(['scontrol', 'requeue', job]).returncode == 0
    wait_for(lambda: any(j == job and s == 'PENDING' for j, _, s, _ in squeue(cpu_cluster)),
             120, 'the requeued job pending')
    # the signal (SIGTERM) saved the iteration in progress
    last = open(osp.join(cell, 'last_checkpoint')).read().strip()
    saved = int(re.search(r'iter_(\d+)\.pth', last).group(1))
    assert 3 <= saved < 8, last
    done = ok(env.benchmark(suite, requeued, '--wait', timeout=900))
    assert table_jobs(done)['tlalign seed 0'][1] == 'done'
    ok(env.benchmark(suite, full, '--wait', timeout=900))
    log = open(osp.join(cell, 'benchmark_output.log')).read()
    assert 'saving iter_' in log and 'stopping for requeue' in log, log[-3000:]
    assert 'restart 1' in log  # the same job ran again ...
    assert f'Load checkpoint from {last}' in log  # ... from that save (--resume: checked path)
    assert_same_training(osp.join(full, 'tlalign', 'seed0', 'iter_8.pth'),
                         osp.join(cell, 'iter_8.pth'), keys=('state_dict', 'optimizer',
                                                             'param_schedulers',
                                                             'exact_resume'))


@pytest.mark.e2e
@pytest.mark.slow
def test_cell_at_a_short_time_limit_requeues_itself_and_ends_bitwise_equal(env, cpu_cluster):
    """--time 1 minute and the warning 40 s before it: training saves at SIGUSR1, the job
    requeues itself (as often as it takes), and the result equals the uninterrupted run."""
    arms = [dict(name='tlalign', config=env.tlalign)]
    suite = env.suite('one', seeds=(0,), arms=arms,
                      downstream=NO_PERIODIC_CHECKPOINT)
    full, limited = osp.join(env.tmp, 'uninterrupted'), osp.join(env.tmp, 'time_limited')
    if not osp.isfile(osp.join(full, 'tlalign', 'seed0', 'iter_8.pth')):
        ok(env.benchmark(suite, full, '--wait', timeout=900))
    # Slurm restarts the requeued job after its hold (CRED_EXPIRE); one --wait must see the
    # cell through every restart
    proc = env.popen([PY, BENCHMARK, suite, '--launcher', 'slurm', '--partition', PARTITION,
                      '--gpus', '1', '--gpus-per-node', '1', '--cpus-per-task', '1',
                      '--work-dir', limited, '--poll', '1', '--wait', '--time', '0:01:00',
                      '--slurm-args=--signal=USR1@40'], SLOW_SECONDS='4')
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-3000:]
    cell = osp.join(limited, 'tlalign', 'seed0')
    log = open(osp.join(cell, 'benchmark_output.log')).read()
    stops = re.findall(r'SIGUSR1: stopped after iteration (\d+)', log)
    restarts = max(int(n) for n in re.findall(r'\(restart (\d+)\)', log))
    print(f'time limit: stopped after iterations {stops}; the job ran {restarts + 1} times')
    assert stops and restarts >= 1, log[-3000:]  # Slurm ran the same job again ...
    assert not markers(limited)['tlalign/seed0']['slurm']['history']  # ... no resubmission
    assert 'TIMEOUT' not in log and 'DUE TO TIME LIMIT' not in log
    assert_same_training(osp.join(full, 'tlalign', 'seed0', 'iter_8.pth'),
                         osp.join(cell, 'iter_8.pth'),
                         keys=('state_dict', 'optimizer', 'param_schedulers', 'exact_resume'))


@pytest.mark.e2e
@pytest.mark.slow
def test_cell_stopped_at_a_signal_but_not_requeued_is_resubmitted_by_wait(env, cpu_cluster):
    """A job that saved at a signal but that Slurm does not run again (here: --no-requeue, so
    the script's `scontrol requeue` is refused) is resubmitted with --resume by the same
    --wait, and still ends equal to the uninterrupted run; its downstream cell, queued after
    the old job, waits for the new one and starts from the final checkpoint."""
    arms = [dict(name='tlalign', config=env.tlalign)]
    full, stopped = osp.join(env.tmp, 'uninterrupted'), osp.join(env.tmp, 'not_requeued')
    if not osp.isfile(osp.join(full, 'tlalign', 'seed0', 'iter_8.pth')):
        suite = env.suite('one', seeds=(0,), arms=arms, downstream=NO_PERIODIC_CHECKPOINT)
        ok(env.benchmark(suite, full, '--wait', timeout=900))
    downstream = (f"downstream = [dict(name='ft', config={env.tlalign!r}, metrics=['top-1'], "
                  "checkpoint_key='load_from', cfg_options={'train_cfg.max_iters': 2, "
                  "'train_cfg.val_interval': 2})]\n")
    suite = env.suite('one-ft', seeds=(0,), arms=arms,
                      downstream=NO_PERIODIC_CHECKPOINT + downstream)
    proc = env.popen([PY, BENCHMARK, suite, '--launcher', 'slurm', '--partition', PARTITION,
                      '--gpus', '1', '--gpus-per-node', '1', '--cpus-per-task', '1',
                      '--work-dir', stopped, '--poll', '1', '--wait',
                      '--slurm-args=--no-requeue'], SLOW_SECONDS='1.5')
    cell = osp.join(stopped, 'tlalign', 'seed0')
    log_path = osp.join(cell, 'benchmark_output.log')
    wait_for(lambda: osp.isfile(log_path) and 'Iter(train) [3/8]' in open(log_path).read(),
             300, 'iteration 3')
    job = markers(stopped)['tlalign/seed0']['slurm']['job_id']
    assert cpu_cluster.run(['scancel', '--signal=USR1', job]).returncode == 0
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-3000:]
    assert 'stopped at a signal with a checkpoint saved and was not restarted' in out, out
    slurm = markers(stopped)['tlalign/seed0']['slurm']
    assert slurm['history'] == [job] and slurm['job_id'] != job, slurm
    ft = markers(stopped)['tlalign/seed0-ft']
    assert ft['status'] == 'done' and ft['slurm']['dependency'] == slurm['job_id'], ft
    ft_log = open(osp.join(stopped, 'tlalign', 'seed0-ft', 'benchmark_output.log')).read()
    assert f"Load checkpoint from {osp.join(cell, 'iter_8.pth')}" in ft_log
    log = open(log_path).read()
    assert 'SIGUSR1: stopped after iteration' in log and 'did not requeue' in log, log[-3000:]
    assert_same_training(osp.join(full, 'tlalign', 'seed0', 'iter_8.pth'),
                         osp.join(cell, 'iter_8.pth'),
                         keys=('state_dict', 'optimizer', 'param_schedulers', 'exact_resume'))
