"""A work dir is input, not trusted state (issue 29, items 2-5 and 12): planted symlinks,
records and result files in a shared work dir, against the real entry points.

Every attack plants what another user of a group-writable work dir could plant, runs the tool
the victim runs (``tools/train.py``, ``tools/test.py --work-dir SHARED``, ``tools/benchmark.py``,
the evaluation stages), and checks that the victim's file outside the work dir is byte-identical
afterwards, or that the planted record is refused in one line naming the file; each also shows
that the attack is live without the check (plain ``open()`` on the planted link, or the check
switched off).
"""
import io
import json
import os
import os.path as osp
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmtlalign import workdir

import datagen
from helpers import ROOT, load_tool, run_main, trained_tiny_deit

BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLANTED attacker@elsewhere'


def victim(tmp_path, name='authorized_keys', text='ssh-ed25519 AAAAVICTIMKEY victim@host\n'):
    """A file of the victim's, outside the work dir; returns (path, its bytes)."""
    home = tmp_path / 'victim_home'
    home.mkdir(exist_ok=True)
    path = home / name
    path.write_text(text)
    return str(path), path.read_bytes()


def one_line_error(message):
    assert message and message.startswith('error: '), message
    assert '\n' not in message.strip(), message
    return message


# ----------------------------------------------------------------------------- the module
def test_writes_replace_a_planted_link_and_logs_and_folders_refuse_one(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    target, before = victim(tmp_path)
    # live without the module: plain open() writes through the link
    live = tmp_path / 'live'
    live.mkdir()
    copy = str(tmp_path / 'victim_copy')
    shutil.copy(target, copy)
    os.symlink(copy, live / 'record.json')
    with open(live / 'record.json', 'w') as f:
        f.write('{}')
    assert open(copy).read() == '{}'

    os.symlink(target, work / 'record.json')
    workdir.write_json(str(work / 'record.json'), dict(a=1))
    assert open(target, 'rb').read() == before
    assert not osp.islink(work / 'record.json') and json.load(open(work / 'record.json')) == \
        dict(a=1)
    os.symlink(target, work / 'run.log')
    with pytest.raises(workdir.WorkDirError, match='run.log.* is a symlink'):
        workdir.open_append(str(work / 'run.log'))
    os.symlink(str(tmp_path / 'victim_home'), work / 'arm')  # a symlinked folder inside
    with pytest.raises(workdir.WorkDirError, match="arm' is a symlink"):
        workdir.write_json(str(work / 'arm' / 'seed0' / 'x.json'), {}, root=str(work))
    assert not osp.exists(tmp_path / 'victim_home' / 'seed0')
    os.link(target, work / 'hard.log')  # a second name of the victim's file
    with pytest.raises(workdir.WorkDirError, match='hard links'):
        workdir.open_append(str(work / 'hard.log'))
    os.mkfifo(work / 'fifo.log')  # must not block
    with pytest.raises(workdir.WorkDirError, match='not a regular file'):
        workdir.open_append(str(work / 'fifo.log'))
    assert open(target, 'rb').read() == before
    # no temporary file left beside
    assert not [n for n in os.listdir(work) if workdir.TMP_MARK in n]


def test_shared_work_dir_gets_a_one_line_warning(tmp_path, capsys):
    from mmtlalign.cli.work_dir_lock import hold_work_dir
    work = tmp_path / 'shared'
    work.mkdir()
    os.chmod(work, 0o775)
    with hold_work_dir(str(work)):
        pass
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: work dir ') and \
        'writable by its group' in err[0] and 'will not follow a symlink' in err[0], err
    os.chmod(work, 0o1777)  # sticky and ours: others cannot replace our files
    with hold_work_dir(str(work)):
        pass
    os.chmod(work, 0o755)
    with hold_work_dir(str(work)):
        pass
    assert capsys.readouterr().err == ''


# ----------------------------------------------------------------------------- train / test
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    return trained_tiny_deit(tmp_path_factory.mktemp('trust_workdir'))


# every name tools/train.py writes in its work dir before or while training: the lock, the
# config dump, the checkpoint and last_checkpoint, a run folder (mmengine's log folder name is
# the start time: predictable)
TRAIN_NAMES = ['.mmtlalign-run.lock', 'deit_tiny.py', 'epoch_1.pth', 'last_checkpoint',
               '20991231_235959']


@pytest.mark.parametrize('name', TRAIN_NAMES)
def test_train_refuses_a_planted_link_under_each_name_it_writes(trained, tmp_path, name):
    target, before = victim(tmp_path)
    work = tmp_path / 'work'
    work.mkdir()
    os.symlink(target if name != '20991231_235959' else osp.dirname(target), work / name)
    error = run_main('tools/train.py', [trained.config, '--work-dir', str(work),
                                        '--cfg-options', *trained.options])
    one_line_error(error)
    assert name in error and 'symlink' in error, error
    assert open(target, 'rb').read() == before
    assert os.listdir(osp.dirname(target)) == ['authorized_keys']


def test_train_writes_through_a_planted_config_dump_link_without_the_check(trained, tmp_path,
                                                                          monkeypatch):
    """The attack on the config dump is live: mmengine's Runner writes ``<config>.py`` with
    plain open(), so without the check before the run the victim's file is overwritten."""
    target, before = victim(tmp_path)
    work = tmp_path / 'work'
    work.mkdir()
    os.symlink(target, work / 'deit_tiny.py')
    monkeypatch.setattr(workdir, 'check_before_run', lambda work_dir: None)
    assert run_main('tools/train.py', [trained.config, '--work-dir', str(work),
                                       '--cfg-options', *trained.options]) is None
    assert open(target, 'rb').read() != before  # the config text is in the victim's file


def test_the_lock_link_truncates_without_the_module(tmp_path):
    """The old lock (``os.open(O_RDWR|O_CREAT)`` + ``ftruncate``) truncated the link's target."""
    target, before = victim(tmp_path)
    work = tmp_path / 'work'
    work.mkdir()
    os.symlink(target, work / '.mmtlalign-run.lock')
    fd = os.open(work / '.mmtlalign-run.lock', os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 0)
    os.close(fd)
    assert open(target, 'rb').read() == b'' != before


@pytest.mark.slow
def test_test_py_in_a_shared_work_dir_refuses_planted_links(trained, tmp_path):
    shared = tmp_path / 'SHARED'
    shared.mkdir()
    os.chmod(shared, 0o777)
    for name in ('.mmtlalign-run.lock', 'deit_tiny.py'):
        target, before = victim(tmp_path, name + '.victim')
        os.symlink(target, shared / name)
        r = subprocess.run(
            [sys.executable, osp.join(ROOT, 'tools', 'test.py'), trained.config,
             trained.genuine, '--work-dir', str(shared), '--cfg-options', *trained.options],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'),
            capture_output=True, text=True, timeout=300)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        warned = [line for line in lines if line.startswith('warning: work dir ')]
        assert len(warned) == 1 and 'writable by everyone' in warned[0], r.stderr[-2000:]
        assert lines[-1].startswith('error: ') and name in lines[-1], r.stderr[-2000:]
        assert sum(line.startswith('error: ') for line in lines) == 1
        assert open(target, 'rb').read() == before
        os.remove(shared / name)


@pytest.mark.slow
def test_planted_last_checkpoint_is_one_line_and_never_a_line_of_its_own(trained, tmp_path):
    """Item 4: a last_checkpoint holding a newline and a key line; --resume refuses it in one
    line that shows the text escaped (no line of the output is the planted key)."""
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'last_checkpoint').write_text(f'{trained.genuine}\n{KEY}\n')
    r = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), trained.config, '--work-dir',
         str(work), '--resume', '--cfg-options', *trained.options],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'),
        capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    one_line_error(r.stderr.strip())
    assert 'last_checkpoint' in r.stderr and 'delete it' in r.stderr
    assert not any(line.strip().startswith('ssh-') for line in
                   (r.stdout + r.stderr).splitlines())
    # live without the check: mmengine's reader hands the whole text on as the path
    from mmengine.runner import find_latest_checkpoint
    assert KEY in find_latest_checkpoint(str(work))


# ----------------------------------------------------------------------------- benchmark
def tiny_suite(tmp_path, seeds=(0,)):
    """A 1-arm suite of the demo config on tiny Fashion-MNIST idx files."""
    src, root = str(tmp_path / 'src'), str(tmp_path / 'fmnist')
    datagen.write_fmnist(src, n_train=64, n_test=16, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    options = {f'{loader}.dataset.data_root': root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_dataloader.dataset.indices': None, 'val_dataloader.dataset.indices':
                    None, 'train_dataloader.batch_size': 16, 'val_dataloader.batch_size': 16,
                    'train_cfg.max_epochs': 1})
    path = tmp_path / 'tiny.py'
    path.write_text(f"""seeds = {list(seeds)}
arms = [dict(name='cutmix', label='CutMix', config={osp.join(DEMO, 'fmnist_vit_cutmix.py')!r})]
cfg_options = {options!r}
""")
    return str(path)


def benchmark(*args, timeout=600):
    return subprocess.run([sys.executable, BENCHMARK, *args], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'),
                          capture_output=True, text=True, timeout=timeout)


def planned(suite, work):
    """The suite's cells (their settings as the benchmark computes them)."""
    from mmtlalign.benchmark import load_suite
    from mmtlalign.benchmark.cells import plan_cells
    return plan_cells(load_suite(suite), osp.abspath(work))


@pytest.mark.slow
def test_benchmark_refuses_a_log_link_and_a_planted_last_checkpoint(tmp_path):
    """Item 4: ``benchmark_output.log`` linked to the victim's authorized_keys, and a
    ``last_checkpoint`` whose text holds a newline and a key: no line is appended through the
    link, the key never stands on a line of its own, one-line errors."""
    suite, work = tiny_suite(tmp_path), tmp_path / 'work'
    cell = work / 'cutmix' / 'seed0'
    cell.mkdir(parents=True)
    target, before = victim(tmp_path)
    os.symlink(target, cell / 'benchmark_output.log')
    r = benchmark(suite, '--work-dir', str(work))
    assert r.returncode != 0
    one_line_error(r.stderr.strip())
    assert 'benchmark_output.log' in r.stderr and 'symlink' in r.stderr
    assert open(target, 'rb').read() == before
    # live without the check: the old log open appends through the link
    copy = str(tmp_path / 'keys_copy')
    shutil.copy(target, copy)
    os.remove(cell / 'benchmark_output.log')
    os.symlink(copy, cell / 'benchmark_output.log')
    with open(cell / 'benchmark_output.log', 'a') as log:
        log.write(f'Traceback: cannot load {KEY}\n'.replace('load ', 'load\n'))
    assert KEY in open(copy).read().splitlines()
    os.remove(cell / 'benchmark_output.log')
    os.symlink(target, cell / 'benchmark_output.log')

    (cell / 'epoch_1.pth').write_bytes(b'x')
    (cell / 'last_checkpoint').write_text(f'{cell / "epoch_1.pth"}\n{KEY}\n')
    r = benchmark(suite, '--work-dir', str(work))
    assert r.returncode != 0
    one_line_error(r.stderr.strip())
    assert 'last_checkpoint' in r.stderr
    assert not any(line.strip().startswith('ssh-') for line in
                   (r.stdout + r.stderr).splitlines())
    assert open(target, 'rb').read() == before


def fake_marker(cell, **fields):
    marker = dict(status='done', settings=cell.settings(), metrics={'top-1': 99.0}, step=1,
                  **fields)
    os.makedirs(cell.work_dir, exist_ok=True)
    with open(osp.join(cell.work_dir, 'benchmark_cell.json'), 'w') as f:
        json.dump(marker, f)


def test_fake_done_markers_do_not_count(tmp_path, monkeypatch, capsys):
    """Item 5: ``status: done`` markers with the suite's settings and made-up top-1, without a
    checkpoint or with one whose SHA-256 is not the recorded one, are refused in one line; with
    the check switched off the planted numbers reach results.json with exit 0."""
    suite = tiny_suite(tmp_path)
    tool = load_tool('tools/benchmark.py')

    def run(work):
        try:
            return tool.main([suite, '--work-dir', work])
        except SystemExit as e:
            return str(e.code)

    planted = str(tmp_path / 'planted.pth')
    open(planted, 'wb').write(b'a planted file')
    for case in ('no checkpoint', 'checkpoint outside', 'wrong hash'):
        work = str(tmp_path / case.replace(' ', '_'))
        [cell] = planned(suite, work)
        ckpt = osp.join(cell.work_dir, 'epoch_1.pth')
        if case == 'no checkpoint':
            fake_marker(cell)
        elif case == 'checkpoint outside':
            fake_marker(cell, checkpoint=planted, sha256=workdir.sha256(planted))
        else:
            fake_marker(cell, checkpoint=ckpt, sha256='0' * 64)
            shutil.copy(planted, ckpt)
        error = one_line_error(run(work))
        assert 'benchmark_cell.json' in error and 'says done' in error and \
            'delete it to run the cell again' in error, (case, error)
        assert not osp.exists(osp.join(work, 'results.json'))
    capsys.readouterr()

    # live without the check: trusting the marker as the old code did puts 99.0 in the results
    from mmtlalign.benchmark import cells as cells_mod
    monkeypatch.setattr(cells_mod, 'finished_result', lambda cell, marker: dict(
        metrics=marker['metrics'], step=1, missing=[], checkpoint=None, sha256=None,
        wall_s=None))
    results = run(str(tmp_path / 'no_checkpoint'))
    assert results['arms']['cutmix']['metrics']['top-1']['mean'] == 99.0


@pytest.mark.slow
def test_benchmark_local_never_writes_through_links_and_takes_metrics_from_its_marker(tmp_path):
    """Symlinks under the marker's old temporary name and the results files are not written
    through (the results files are replaced); a
    finished cell's numbers come from its marker after the checkpoint's SHA-256 is checked: a
    later-named scalars folder does not override them (the old reader would have taken it), and
    a changed checkpoint is refused."""
    from mmtlalign.benchmark.metrics import last_validation
    suite, work = tiny_suite(tmp_path), tmp_path / 'work'
    cell = work / 'cutmix' / 'seed0'
    cell.mkdir(parents=True)
    victims = {}
    # (benchmark_cell.json.tmp: the old fixed temporary name, written through before)
    for i, path in enumerate([cell / 'benchmark_cell.json.tmp', work / 'results.json',
                              work / 'results.md', work / 'results.png']):
        victims[path] = victim(tmp_path, f'victim{i}')
        os.symlink(victims[path][0], path)
    r = benchmark(suite, '--work-dir', str(work))
    # the link in the cell's folder stops its training (tools/train.py refuses any link where
    # the run writes) in one line; the results files are written, as files of their own
    assert r.returncode != 0 and 'cutmix seed 0: FAILED' in r.stdout, r.stdout[-3000:]
    assert "benchmark_cell.json.tmp' is a symlink in a work dir" in r.stdout
    for path, (target, before) in victims.items():
        assert open(target, 'rb').read() == before, path
        if path.name != 'benchmark_cell.json.tmp':
            assert not osp.islink(path) and osp.getsize(path) > 0
    os.remove(cell / 'benchmark_cell.json.tmp')
    r = benchmark(suite, '--work-dir', str(work))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    marker = json.load(open(cell / 'benchmark_cell.json'))
    assert marker['status'] == 'done' and marker['sha256'] == workdir.sha256(
        marker['checkpoint'])
    res = json.load(open(work / 'results.json'))
    top1 = res['arms']['cutmix']['metrics']['top-1']['per_seed']['0']
    assert top1 == marker['metrics']['top-1']

    # a later-named run folder with made-up numbers, planted in the finished cell
    planted = cell / '99991231_235959' / 'vis_data'
    planted.mkdir(parents=True)
    (planted / 'scalars.json').write_text(json.dumps({'accuracy/top1': 99.9, 'step': 1}) +
                                          '\n')
    from mmtlalign.benchmark import load_suite
    metrics = load_suite(suite).metrics
    assert last_validation(str(cell), metrics)['top-1'] == 99.9  # live: the old source
    r = benchmark(suite, '--work-dir', str(work))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(work / 'results.json'))['arms']['cutmix']['metrics']['top-1'][
        'per_seed']['0'] == top1
    # another user's run folder is not read even when the run has just ended
    os.chown(cell / '99991231_235959', 65534, 65534)
    assert last_validation(str(cell), metrics)['top-1'] == top1

    # the checkpoint changed after the run: refused in one line naming the marker
    with open(marker['checkpoint'], 'ab') as f:
        f.write(b'\0')
    r = benchmark(suite, '--work-dir', str(work))
    assert r.returncode != 0
    one_line_error(r.stderr.strip())
    assert 'SHA-256 differs' in r.stderr and 'benchmark_cell.json' in r.stderr


def test_records_fail_their_schema_in_one_line(tmp_path):
    from mmtlalign.benchmark.cells import read_marker
    from mmtlalign.evaluation.results import read_result
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'benchmark_cell.json').write_text(json.dumps(dict(
        status='done', settings={}, slurm=dict(job_id='--user=victim'))))
    with pytest.raises(workdir.WorkDirError, match=r"slurm.job_id = '--user=victim' is not "
                                                   r'allowed.*delete it'):
        read_marker(str(work))
    (work / 'benchmark_cell.json').write_text(json.dumps(dict(status='pwned', settings={})))
    with pytest.raises(workdir.WorkDirError, match="status = 'pwned'"):
        read_marker(str(work))
    (work / 'occlusion.json').write_text(json.dumps(dict(
        status='done', settings={}, metrics={'occlusion AUC': 'NaN; rm -rf'})))
    with pytest.raises(workdir.WorkDirError, match='occlusion.json.*evaluation result'):
        read_result(str(work), 'occlusion')
    (work / 'big.json').write_bytes(b' ' * (workdir.RECORD_LIMIT + 1))
    with pytest.raises(workdir.WorkDirError, match='bytes, more than a record'):
        workdir.read_json(str(work / 'big.json'))
    (work / 'theirs.json').write_text('{}')
    os.chown(work / 'theirs.json', 65534, 65534)
    with pytest.raises(workdir.WorkDirError, match='belongs to another user'):
        workdir.read_json(str(work / 'theirs.json'))


# ----------------------------------------------------------------------------- cache (12)
TINY = """
_base_ = {base!r}
test_dataloader = dict(batch_size=8, dataset=dict(data_root={root!r}, indices=None))
"""


def test_planted_cache_array_of_the_wrong_shape_is_refused(tmp_path):
    """Item 12: a file planted in the evaluation cache under the key of a corrupted image set
    (computable by anyone who sees the images) is checked for shape and dtype."""
    pytest.importorskip('imagecorruptions')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    from mmtlalign.evaluation.cli import evaluate
    src, root = str(tmp_path / 'src'), str(tmp_path / 'fmnist')
    datagen.write_fmnist(src, n_train=8, n_test=8, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    config = tmp_path / 'tiny.py'
    config.write_text(TINY.format(base=osp.join(DEMO, 'fmnist_vit_cutmix.py'), root=root))
    cfg = Config.fromfile(str(config))
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model_cfg = cfg.model.copy()
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=MODELS.build(model_cfg).state_dict(), meta={}), ckpt)
    spec = [dict(kind='corruption', corruptions=['gaussian_noise'], severities=[1],
                 num_images=8)]
    cache, out = str(tmp_path / 'evaluation_cache'), str(tmp_path / 'eval')
    first = evaluate(str(config), ckpt, spec, out, cache_dir=cache, echo=lambda m: None)
    [name] = os.listdir(cache)
    path = osp.join(cache, name)
    good = np.load(path)
    assert good.dtype == np.uint8 and good.shape[0] == 8
    bad = np.zeros((2, 1, 28, 28), np.uint8)  # another image set's array
    buf = io.BytesIO()
    np.save(buf, bad)
    with open(path, 'wb') as f:
        f.write(buf.getvalue())
    assert np.load(path).shape == (2, 1, 28, 28)  # live: the old reader took it as it was
    with pytest.raises(workdir.WorkDirError, match=rf'{name}.* shape \(2, 1, 28, 28\), not '
                                                   r'the uint8 \(8, 1, 28, 28\).*delete it'):
        evaluate(str(config), ckpt, spec, out, cache_dir=cache, force=True,
                 echo=lambda m: None)
    for dtype, why in ((np.int8, 'holds a int8 array'), (np.float32, 'bytes, more than')):
        np.save(path, good.astype(dtype))
        with pytest.raises(workdir.WorkDirError, match=why):
            evaluate(str(config), ckpt, spec, out, cache_dir=cache, force=True,
                     echo=lambda m: None)
    os.remove(path)
    again = evaluate(str(config), ckpt, spec, out, cache_dir=cache, force=True,
                     echo=lambda m: None)
    assert again['corruption']['metrics'] == first['corruption']['metrics']
    assert stat.S_ISREG(os.lstat(path).st_mode)
