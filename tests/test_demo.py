"""The main job: Fashion-MNIST preparation (real idx files), the demo configs and tools/demo.py.

The idx files are written here in the real format (big-endian magic number and dimensions,
then uint8 data; gzip'd as Debian ships them) and go through the same preparation code and
mmpretrain's own FashionMNIST reader as the real data. The demo trains both arms through
tools/train.py (real mmengine Runner) for one epoch on a small subset.
"""
import gzip
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config

from mmtlalign.datasets import fashion_mnist as fm

import datagen
from helpers import assert_png

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')


def build(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    return DATASETS.build(cfg)


# ------------------------------------------------------------------------------------------
# preparation
# ------------------------------------------------------------------------------------------
def test_prepare_reads_real_gzipped_idx_files(tmp_path):
    src, root = str(tmp_path / 'debian'), str(tmp_path / 'cache')
    data = datagen.write_fmnist(src, gz=True)
    assert fm.prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False) \
        == osp.abspath(root)
    assert sorted(os.listdir(root)) == sorted(fm.FILES)  # uncompressed, no leftovers

    for split, prefix in (('train', 'train'), ('test', 't10k')):
        images, labels = data[prefix]
        ds = build(dict(type='PreparedFashionMNIST', data_root=root, split=split,
                        download=False, pipeline=[]))
        assert len(ds) == len(labels)
        for i in (0, len(labels) - 1):
            info = ds.get_data_info(i)
            np.testing.assert_array_equal(info['img'], images[i])
            assert int(info['gt_label']) == labels[i]
    # mmpretrain's own class reads the prepared folder unchanged (the ecosystem's path)
    upstream = build(dict(type='FashionMNIST', data_root=root, test_mode=True, download=False,
                          pipeline=[]))
    np.testing.assert_array_equal(upstream.get_data_info(3)['img'], data['t10k'][0][3])

    # prepared: a second call does nothing
    before = os.path.getmtime(osp.join(root, 'train-images-idx3-ubyte'))
    fm.prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    assert os.path.getmtime(osp.join(root, 'train-images-idx3-ubyte')) == before


def test_prepare_from_installed_debian_package_and_subset(tmp_path):
    deb, root = str(tmp_path / 'usr_share_datasets_fashion-mnist'), str(tmp_path / 'cache')
    data = datagen.write_fmnist(deb, n_train=30, gz=True)
    fm.prepare_fashion_mnist(root, debian_dir=deb, use_apt=False, allow_download=False)
    ds = build(dict(type='PreparedFashionMNIST', data_root=root, split='train', indices=10,
                    pipeline=[dict(type='PackInputs')]))
    assert len(ds) == 10
    item = ds[9]
    assert tuple(item['inputs'].shape) == (1, 28, 28)
    assert item['data_samples'].gt_label.item() == data['train'][1][9]


def test_bad_idx_files_name_the_problem(tmp_path):
    src = str(tmp_path / 'src')
    datagen.write_fmnist(src, gz=False)
    # a truncated image file
    path = osp.join(src, 'train-images-idx3-ubyte')
    with open(path, 'rb') as f:
        raw = f.read()
    with open(path, 'wb') as f:
        f.write(raw[:-100])
    with pytest.raises(fm.FashionMNISTError, match='train-images-idx3-ubyte.*truncated'):
        fm.prepare_fashion_mnist(str(tmp_path / 'a'), source=src, use_apt=False,
                                 allow_download=False)
    # labels where images belong
    with open(path, 'wb') as f:
        f.write(open(osp.join(src, 'train-labels-idx1-ubyte'), 'rb').read())
    with pytest.raises(fm.FashionMNISTError, match='expected an idx images file'):
        fm.prepare_fashion_mnist(str(tmp_path / 'b'), source=src, use_apt=False,
                                 allow_download=False)
    # a folder without the files
    with pytest.raises(fm.FashionMNISTError, match='does not hold the Fashion-MNIST idx'):
        fm.prepare_fashion_mnist(str(tmp_path / 'c'), source=str(tmp_path), use_apt=False)


def test_without_debian_packages_falls_back_to_mmpretrain_download(tmp_path, monkeypatch,
                                                                    capfd):
    src = str(tmp_path / 'mirror')
    datagen.write_fmnist(src, gz=True)
    monkeypatch.setattr(fm.shutil, 'which', lambda tool: None)  # no apt-get / dpkg-deb

    def fake_download(root):  # stands in for the network; same gz files, same extraction
        for name in fm.FILES:
            with gzip.open(osp.join(src, name + '.gz'), 'rb') as fin, \
                    open(osp.join(root, name), 'wb') as fout:
                fout.write(fin.read())

    monkeypatch.setattr(fm, 'download_with_mmpretrain', fake_download)
    root = str(tmp_path / 'cache')
    os.makedirs(root)
    fm.prepare_fashion_mnist(root, debian_dir=str(tmp_path / 'none'))
    err = capfd.readouterr().err
    assert '`apt-get` is not available' in err
    assert "falling back to mmpretrain's own download" in err
    assert fm.is_prepared(root)
    with pytest.raises(fm.FashionMNISTError, match='Debian package .* unavailable'):
        fm.prepare_fashion_mnist(str(tmp_path / 'x'), debian_dir=str(tmp_path / 'none'),
                                 allow_download=False)


# ------------------------------------------------------------------------------------------
# configs and the demo
# ------------------------------------------------------------------------------------------
def test_demo_arms_differ_only_in_the_label_rule():
    a = Config.fromfile(osp.join(DEMO, 'fmnist_vit_tlalign.py')).to_dict()
    b = Config.fromfile(osp.join(DEMO, 'fmnist_vit_cutmix.py')).to_dict()
    t = Config.fromfile(osp.join(DEMO, 'fmnist_vit_transmix.py')).to_dict()
    assert a['model'].pop('align') is True and b['model'].pop('align') is False
    assert t['model'].pop('align') == 'TransMixLabel'
    a['model']['backbone'].pop('residual_weight')  # the default, spelled out in the TL-Align arm
    assert a == b == t
    # inherits the main recipe
    assert a['model']['type'] == 'TLAlignClassifier' and a['model']['train_cfg'] is None
    assert a['optim_wrapper']['optimizer']['type'] == 'AdamW'
    assert a['model']['head']['loss']['label_smooth_val'] == 0.1
    assert a['model']['mix']['prob'] == 1.0  # every batch mixed, as in the recipe


def test_budget_scales_the_images_each_cell_sees():
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import demo
    assert demo.budget_schedule(1) == (demo.SUBSET, demo.EPOCHS)  # the default
    for budget in (0.25, 0.5, 2, 3, 5):
        subset, epochs = demo.budget_schedule(budget)
        seen = (subset or demo.TRAIN_IMAGES) * epochs
        assert seen == pytest.approx(budget * demo.SUBSET * demo.EPOCHS, rel=0.1)
    args = demo.parse_args(['--budget', '2'])
    assert (args.subset, args.epochs) == (2 * demo.SUBSET, demo.EPOCHS)
    args = demo.parse_args(['--budget', '2', '--epochs', '1'])  # explicit wins
    assert args.epochs == 1


def test_main_job_runs_the_canvas_suite_and_the_fast_one_on_request(capsys):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import demo

    from mmtlalign.benchmark import demo as main_job
    args = demo.parse_args([])
    assert (args.suite, args.arms) == ('canvas', ['cutmix', 'tlalign'])
    assert list(main_job.MAIN_JOB_ARMS) == args.arms
    assert main_job.SUITES[args.suite] == main_job.SUITE
    assert osp.basename(main_job.SUITE) == 'fmnist_canvas.py'
    args = demo.parse_args(['--suite', 'fmnist'])
    assert args.arms == ['cutmix', 'tlalign', 'transmix']
    assert demo.parse_args(['--data', 'x']).suite == 'fmnist'  # your folder: no canvas
    # each suite's arms are the suite file's
    from mmtlalign.benchmark.suite import load_suite
    for name, path in main_job.SUITES.items():
        assert [a.name for a in load_suite(path).arms] == demo.SUITE_ARMS[name]
    for bad, msg in ((['--arms', 'oracle', '--suite', 'fmnist'], 'not in the fmnist suite'),
                     (['--arms', 'mixpro'], 'not in the canvas suite'),
                     (['--data', 'x', '--suite', 'canvas'], '--data runs the fmnist suite')):
        with pytest.raises(SystemExit):
            demo.parse_args(bad)
        assert msg in capsys.readouterr().err


def run(args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_top1(cell_dir):
    """Last validation top-1 of a cell, straight from its newest scalars.json."""
    import glob
    newest = sorted(glob.glob(osp.join(cell_dir, '*', 'vis_data', 'scalars.json')))[-1]
    with open(newest) as f:
        return [json.loads(line) for line in f if 'accuracy/top1' in line][-1]['accuracy/top1']


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_runs_the_embedded_suite_over_seeds(tmp_path):
    src, root, work = (str(tmp_path / n) for n in ('src', 'cache', 'work'))
    datagen.write_fmnist(src, n_train=96, n_test=32, gz=True)
    result = run([osp.join(ROOT, 'tools', 'demo.py'), '--arms', 'cutmix', 'tlalign', '--seeds',
                  '0', '1', '--epochs', '1', '--subset', '64', '--val-subset', '32',
                  '--batch-size', '16', '--fmnist-root', root, '--fmnist-source', src,
                  '--work-dir', work, '--analysis-batches', '1'])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '4 cell(s)' in result.stdout, result.stdout
    out = result.stdout[result.stdout.index('== Results'):]  # the final table and verdict
    assert 'token fluct.' in out, out
    results = json.load(open(osp.join(work, 'results.json')))
    for arm, label in (('cutmix', 'CutMix'), ('tlalign', 'TL-Align')):
        per_seed = results['arms'][arm]['metrics']['top-1']['per_seed']
        assert per_seed == {s: last_top1(osp.join(work, arm, f'seed{s}')) for s in ('0', '1')}
        row = next(line for line in out.splitlines() if line.startswith(label + ' '))
        assert ', '.join(f'{per_seed[s]:.2f}' for s in ('0', '1')) in row
        analysis = results['demo']['analysis'][arm]
        assert analysis['num_images'] == 32
        # unmixed images (an empty box, or paired with themselves) are not judged as pairs
        assert analysis['num_pred_pairs'] + analysis['num_unmixed'] <= 32
        assert osp.isfile(osp.join(work, arm, 'seed0', 'token_fluctuation', 'share_maps.png'))
    assert '- (area labels)' in next(line for line in out.splitlines()
                                     if line.startswith('CutMix '))
    # the verdict line is the benchmark's: it names a difference only if the CI excludes 0
    verdict = next(line for line in out.splitlines() if line.startswith('Verdict'))
    comp = results['comparisons'][0]
    assert verdict == results['verdict']
    assert ('beyond the seed noise' in verdict) == comp['excludes_zero']
    assert '64 training / 32 test images, 28x28, on a 56x56 canvas' in results['demo']['dataset']
    # the main job is the canvas suite: every model's label rules judged against the content
    assert results['suite'] == 'fmnist_canvas'
    assert results['evaluation']['stages']['label_fidelity']['kind'] == 'label_fidelity'
    assert 'share MAE TL-Align' in out and 'share MAE area' in out, out
    assert_png(osp.join(work, 'curves.png'), min_size=(1000, 300))
    assert_png(osp.join(work, 'results.png'))
    assert_png(osp.join(work, 'tlalign', 'seed0', 'token_fluctuation', 'share_maps.png'))
    assert osp.isfile(osp.join(work, 'results.md'))


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_on_an_imagenet_layout_folder(tmp_path):
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), num_classes=3, per_class=6,
                                 val_per_class=2, size=40)
    work = str(tmp_path / 'work')
    result = run([osp.join(ROOT, 'tools', 'demo.py'), '--data', data, '--arms', 'tlalign',
                  '--seeds', '0', '--epochs', '1', '--subset', '12', '--batch-size', '6',
                  '--img-size', '14', '--work-dir', work, '--analysis-batches', '0'])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.load(open(osp.join(work, 'results.json')))
    assert '3 classes, 12 training / 6 validation images at 14x14' in results['demo']['dataset']
    assert 'no verdict' in results['verdict'] or 'no comparison' in results['verdict']
    cfg = Config.fromfile(osp.join(work, 'configs', 'tlalign', 'config.py'))
    assert len(cfg.train_dataloader.dataset.indices) == 12
    assert cfg.model.head.num_classes == 3 and cfg.model.align is True
    # the results are titled by the user's folder, not by the Fashion-MNIST suite
    assert results['suite'] == 'imagenet'
    assert open(osp.join(work, 'results.md')).readline().strip() == '# Benchmark `imagenet`'

    bad = run([osp.join(ROOT, 'tools', 'demo.py'), '--data', str(tmp_path / 'nowhere')])
    assert bad.returncode != 0 and 'no train/ folder' in bad.stderr
