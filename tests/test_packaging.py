"""Packaging: version ranges that keep an existing environment, and mim.

* ``install_requires`` holds ranges; the exact pins of ``requirements/pins.txt`` must lie inside
  them, and pip's resolver, asked to install mmtlalign into this environment, must keep every
  installed package (torch, mmcv, ...) as it is.
* A wheel carries configs and tools under ``mmtlalign/.mim``; installed from that wheel,
  ``mim train mmtlalign CONFIG`` and ``mim test mmtlalign CONFIG --checkpoint CKPT`` find the
  config by name and run our tools.
"""
import glob
import json
import os
import os.path as osp
import runpy
import shutil
import subprocess
import sys
import sysconfig

import pytest
from packaging.requirements import Requirement

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable


def read_pins():
    pins = {}
    with open(osp.join(ROOT, 'requirements', 'pins.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if '==' in line:
                name, version = line.split('==')
                pins[name.lower()] = version
    return pins


def setup_requirements():
    scope = runpy.run_path(osp.join(ROOT, 'setup.py'), run_name='setup_py_under_test')
    return scope['INSTALL_REQUIRES'], scope['EXTRAS_REQUIRE']


def test_pins_lie_inside_install_requires_ranges():
    pins = read_pins()
    install_requires, extras = setup_requirements()
    ranged = {'torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain', 'mmdet',
              'mmsegmentation', 'numpy'}
    for spec in install_requires + extras['tensorboard'] + extras['evaluation']:
        req = Requirement(spec)
        name = req.name.lower()
        if name in ranged:
            assert any(s.operator == '>=' for s in req.specifier), f'{spec}: no lower bound'
        if name in pins:  # every pinned runtime package must be allowed by the range
            assert req.specifier.contains(pins[name]), f'pin {name}=={pins[name]} outside {spec}'
    assert ranged <= {Requirement(s).name.lower() for s in install_requires}
    assert not any('==' in spec for spec in install_requires), 'exact pins belong in pins.txt'


def test_pip_keeps_the_installed_torch_and_mmcv():
    """``pip install -e .`` into this environment: the resolver changes nothing but mmtlalign
    (no index: it may only use what is installed, so a range it could not meet would fail)."""
    report = subprocess.run(
        [PY, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation',
         '--quiet', '--report', '-', '-e', ROOT],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    names = [item['metadata']['name'] for item in json.loads(report.stdout)['install']]
    assert names == ['mmtlalign'], f'pip would also install/replace {names}'


# ----------------------------------------------------------------------------- mim
MIM_OPTIONS = [
    'model.backbone.img_size=64', 'model.backbone.patch_size=16',
    'train_dataloader.dataset.pipeline.1.scale=64',
    'val_dataloader.dataset.pipeline.1.scale=72', 'val_dataloader.dataset.pipeline.2.crop_size=64',
    'test_dataloader.dataset.pipeline.1.scale=72',
    'test_dataloader.dataset.pipeline.2.crop_size=64',
]


def copy_source_tree(dst):
    """What an sdist holds, without the checkout's own mmtlalign/.mim symlinks."""
    for name in ('setup.py', 'MANIFEST.in', 'model-index.yml'):
        shutil.copy(osp.join(ROOT, name), dst)
    ignore = shutil.ignore_patterns('.mim', '__pycache__', '*.pyc')
    for name in ('mmtlalign', 'configs', 'tools', 'requirements'):
        shutil.copytree(osp.join(ROOT, name), osp.join(dst, name), ignore=ignore)


@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    """A fresh venv that sees this environment's packages and has mmtlalign from a wheel."""
    pytest.importorskip('mim', reason='openmim is not installed (requirements/tests.txt)')
    base = tmp_path_factory.mktemp('wheel')
    src, dist, venv = base / 'src', base / 'dist', base / 'venv'
    os.makedirs(src)
    copy_source_tree(str(src))
    build = subprocess.run([PY, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                            '--no-index', '-q', '-w', str(dist), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = glob.glob(str(dist / 'mmtlalign-*.whl'))[0]
    subprocess.run([sys.base_prefix + '/bin/python3', '-m', 'venv', '--without-pip', str(venv)],
                   check=True, timeout=120)
    venv_py = str(venv / 'bin' / 'python')
    site = subprocess.check_output(
        [venv_py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], text=True)
    # this environment's packages (torch, mmcv, openmim, ...) behind the venv's own
    with open(osp.join(site.strip(), 'parent_env.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    install = subprocess.run([PY, '-m', 'pip', '--python', venv_py, 'install', '--no-deps',
                              '--no-index', '-q', wheel], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv_py, site.strip()


def test_wheel_carries_configs_and_tools_for_mim(wheel_env):
    _, site = wheel_env
    mim_dir = osp.join(site, 'mmtlalign', '.mim')
    for rel in ('configs/tlalign/deit-s_8xb128.py', 'configs/tlalign/swin-t_16xb64.py',
                'tools/train.py', 'tools/test.py', 'model-index.yml',
                'configs/tlalign/metafile.yml'):
        assert osp.isfile(osp.join(mim_dir, rel)), f'{rel} missing from the wheel'
        assert not osp.islink(osp.join(mim_dir, rel.split('/')[0])), 'a wheel holds copies'


@pytest.mark.slow
def test_mim_train_and_test_run_our_tools(wheel_env, tmp_path):
    venv_py, site = wheel_env
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2, val_per_class=1)
    work_dir = str(tmp_path / 'work')
    options = datagen.tiny_cls_options(data) + MIM_OPTIONS
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)  # the package must come from the wheel, not the checkout
    train = subprocess.run(
        [venv_py, '-m', 'mim', 'train', 'mmtlalign', 'deit-t_8xb128.py', '--gpus', '0',
         '--work-dir', work_dir, '--cfg-options', *options],
        capture_output=True, text=True, timeout=900, cwd=str(tmp_path), env=env)
    assert train.returncode == 0, (train.stdout + train.stderr)[-3000:]
    packaged = osp.realpath(osp.join(site, 'mmtlalign', '.mim', 'configs', 'tlalign',
                                     'deit-t_8xb128.py'))
    assert packaged in train.stdout  # mim found the config inside the installed package
    assert osp.join('.mim', 'tools', 'train.py') in train.stdout  # and ran our tool
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)

    test = subprocess.run(
        [venv_py, '-m', 'mim', 'test', 'mmtlalign', 'deit-t_8xb128.py', '--checkpoint', ckpt,
         '--gpus', '0', '--work-dir', work_dir, '--cfg-options', *options],
        capture_output=True, text=True, timeout=900, cwd=str(tmp_path), env=env)
    assert test.returncode == 0, (test.stdout + test.stderr)[-3000:]
    assert 'accuracy/top1' in test.stdout + test.stderr
