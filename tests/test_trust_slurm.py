"""A work dir is input, not trusted state, under ``tools/benchmark.py --launcher slurm`` (issue 29,
items 2 and 3) on the real one-node Slurm of :mod:`slurm_cluster`.

A planted ``benchmark_cell.json`` whose job id is ``--user=VICTIM`` (and a ``benchmark_job.json``
saying that job stopped, rc 75) made the victim's rerun call ``scancel --user=VICTIM``: every
job of the victim was cancelled. Here the victim (the user running the tests) has an unrelated
job queued, which must survive the rerun; the same planted id handed to ``scancel`` as the old
code did cancels it. The job script's own writes (its end record) and reads (the training cell's
``last_checkpoint``) are run as the script runs them.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
from slurm_cluster import PARTITION, SlurmCluster, unavailable

from helpers import ROOT

pytestmark = pytest.mark.skipif(unavailable() is not None,
                                reason=f'no Slurm here: {unavailable()}')
BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    c = SlurmCluster(str(tmp_path_factory.mktemp('slurm_trust')))
    c.start(gres=0)
    yield c
    c.stop()


def suite_file(tmp_path):
    path = tmp_path / 'suite.py'
    path.write_text(f"seeds = [0]\narms = [dict(name='cutmix', config="
                    f"{osp.join(DEMO, 'fmnist_vit_cutmix.py')!r})]\n")
    return str(path)


def benchmark(cluster, suite, work, *args):
    env = dict(os.environ, **cluster.env, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, BENCHMARK, suite, '--launcher', 'slurm',
                           '--partition', PARTITION, '--gpus-per-node', '1',
                           '--cpus-per-task', '1', '--work-dir', work, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def held_job(cluster, name):
    """An unrelated job of the same user, held in the queue."""
    r = cluster.run(['sbatch', '--parsable', '--hold', f'--job-name={name}',
                     f'--partition={PARTITION}', '--wrap', 'sleep 600'])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(';')[0]


def queued(cluster):
    r = cluster.run(['squeue', '-h', '-o', '%i'])
    return set(r.stdout.split())


def plant(cell, job_id):
    os.makedirs(cell.work_dir, exist_ok=True)
    with open(osp.join(cell.work_dir, 'benchmark_cell.json'), 'w') as f:
        json.dump(dict(status='submitted', settings=cell.settings(),
                       slurm=dict(job_id=job_id, command='sbatch ...', history=[])), f)
    with open(osp.join(cell.work_dir, 'benchmark_job.json'), 'w') as f:
        json.dump(dict(job_id=job_id, rc=75), f)


@pytest.mark.slow
def test_planted_job_id_option_cancels_nothing(cluster, tmp_path):
    from mmtlalign.benchmark import load_suite
    from mmtlalign.benchmark.cells import plan_cells
    suite, work = suite_file(tmp_path), str(tmp_path / 'work')
    [cell] = plan_cells(load_suite(suite), osp.abspath(work))
    victim_job = held_job(cluster, 'unrelated')
    user = 'root' if os.geteuid() == 0 else os.environ.get('USER', 'root')
    plant(cell, f'--user={user}')
    r = benchmark(cluster, suite, work)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'benchmark_cell.json' in \
        lines[0] and f"'--user={user}' is not allowed" in lines[0], r.stderr
    assert victim_job in queued(cluster)  # the unrelated job survived
    # a job id that is not an option but not one id either: refused too
    for bad in (f'{victim_job},1',):
        plant(cell, bad)
        r = benchmark(cluster, suite, work)
        assert r.returncode != 0 and 'benchmark_cell.json' in r.stderr
    assert victim_job in queued(cluster)

    # live without the check: what the old code ran with the planted id cancels the victim's job
    cluster.run(['scancel', f'--user={user}'])
    deadline = time.time() + 30
    while victim_job in queued(cluster) and time.time() < deadline:
        time.sleep(0.2)
    assert victim_job not in queued(cluster)


@pytest.mark.slow  # (the cluster takes ~20 s to start)
def test_slurm_commands_take_ids_only_where_no_option_can_be(cluster):
    """``squeue --jobs=ID``, ``scancel -- ID`` and ``scontrol show job`` on a real queue."""
    from mmtlalign.benchmark.slurm import query, scancel
    from mmtlalign.errors import UserInputError
    env = dict(os.environ, **cluster.env)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        job, other = held_job(cluster, 'a'), held_job(cluster, 'b')
        assert query([job])[job]['state'] == 'PENDING'
        assert scancel(job).returncode == 0
        deadline = time.time() + 30
        while job in queued(cluster) and time.time() < deadline:
            time.sleep(0.2)
        assert query([job])[job]['state'] == 'CANCELLED'  # from scontrol, out of the queue
        assert other in queued(cluster)
        for bad in ('--user=root', '-u root', f'{other},1'):
            with pytest.raises(UserInputError, match='not a Slurm job id'):
                scancel(bad)
            with pytest.raises(UserInputError, match='not a Slurm job id'):
                query([bad])
        assert other in queued(cluster)
        scancel(other)
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.slow
def test_output_log_link_is_refused_before_sbatch_and_the_script_link_replaced(cluster,
                                                                             tmp_path):
    """Slurm opens ``--output`` by name and follows a link: the tool creates the log itself
    first and refuses a planted link; ``benchmark_job.sh`` is replaced, not written through."""
    suite, work = suite_file(tmp_path), tmp_path / 'work'
    cell = work / 'cutmix' / 'seed0'
    cell.mkdir(parents=True)
    home = tmp_path / 'victim_home'
    home.mkdir()
    keys, script = home / 'authorized_keys', home / 'bashrc'
    keys.write_text('ssh-ed25519 AAAAVICTIM victim@host\n')
    script.write_text('# the victim\'s bashrc\n')
    before = {p: p.read_bytes() for p in (keys, script)}
    os.symlink(keys, cell / 'benchmark_output.log')
    os.symlink(script, cell / 'benchmark_job.sh')
    jobs = queued(cluster)
    r = benchmark(cluster, suite, str(work))
    assert r.returncode != 0
    assert r.stderr.strip().startswith('error: ') and len(r.stderr.strip().splitlines()) == 1
    assert 'benchmark_output.log' in r.stderr and 'symlink' in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in (keys, script)} == before
    assert not osp.islink(cell / 'benchmark_job.sh')  # replaced by the tool's own script
    assert queued(cluster) == jobs  # nothing submitted


def job_script_line(tmp_path, what):
    """The line of a cell's job script that runs :mod:`mmtlalign.workdir` for ``what``."""
    from mmtlalign.benchmark import Launcher, load_suite
    from mmtlalign.benchmark.cells import Cell
    from mmtlalign.benchmark.slurm import job_script
    suite = load_suite(suite_file(tmp_path))
    parent = Cell(arm='a', seed=0, stage='train', config=suite.arms[0].config,
                  work_dir=str(tmp_path / 'work' / 'a' / 'seed0'), options={}, metrics=[])
    cell = Cell(arm='a', seed=0, stage='ft', config=suite.arms[0].config,
                work_dir=str(tmp_path / 'work' / 'a' / 'seed0-ft'), options={}, metrics=[],
                parent=parent, checkpoint_key='load_from')
    text = job_script(cell, Launcher(kind='slurm', partition=PARTITION), gres=False)
    return next(line for line in text.splitlines() if what in line), cell


def test_the_job_scripts_own_record_and_checkpoint_read_never_follow_links(tmp_path):
    line, cell = job_script_line(tmp_path, 'job-record')
    os.makedirs(cell.work_dir)
    victim = tmp_path / 'victim'
    victim.write_text('precious\n')
    os.symlink(victim, osp.join(cell.work_dir, 'benchmark_job.json'))
    os.symlink(victim, osp.join(cell.work_dir, 'benchmark_job.json.tmp'))  # the old temp name
    t = time.time()
    r = subprocess.run(['bash', '-c', f'WORK={cell.work_dir}; rc=75; {line}'],
                       env=dict(os.environ, SLURM_JOB_ID='4242'), capture_output=True,
                       text=True)
    took = time.time() - t
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == 'precious\n'
    record = json.load(open(osp.join(cell.work_dir, 'benchmark_job.json')))
    assert record['job_id'] == '4242' and record['rc'] == 75
    assert took < 5, f'the record took {took:.1f} s (torch imported?)'

    line, _ = job_script_line(tmp_path, 'last-checkpoint')
    parent = osp.join(tmp_path, 'work', 'a', 'seed0')
    os.makedirs(parent)
    ckpt = osp.join(parent, 'iter_8.pth')
    open(ckpt, 'wb').write(b'x')
    cmd = line.split('$(', 1)[1].rsplit(')', 1)[0]
    with open(osp.join(parent, 'last_checkpoint'), 'w') as f:
        f.write(ckpt)
    r = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == ckpt, r.stderr
    with open(osp.join(parent, 'last_checkpoint'), 'w') as f:
        f.write(f'{ckpt}\nssh-ed25519 AAAAPLANTED x@y\n')
    r = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ''
    assert len(r.stderr.strip().splitlines()) == 1 and 'last_checkpoint' in r.stderr
    assert not re.search(r'^ssh-', r.stderr, re.M)
    with open(osp.join(parent, 'last_checkpoint'), 'w') as f:
        f.write(str(tmp_path / 'victim'))  # a file outside the training cell's work dir
    r = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True)
    assert r.returncode == 1 and 'does not name one checkpoint file inside' in r.stderr
