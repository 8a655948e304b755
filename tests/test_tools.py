"""The foundation: tools/train.py, --resume, dist_train.sh on CPU, clear errors, weights_only.

These drive the real tools as subprocesses, with the real mmengine Runner, on an
ImageNet-layout folder written to disk.
"""
import glob
import os
import os.path as osp
import sys

import pytest
import torch

import datagen
from helpers import free_port, run_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable

# A config that inherits mmpretrain's DeiT recipe directly, as a user would write it.
DEIT_CONFIG = datagen.tiny_deit_config('mmpretrain::deit/deit-tiny_4xb256_in1k.py')






def train_cmd(config, work_dir, options, *extra):
    return [PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
            *extra, '--cfg-options', *options]


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return datagen.make_imagenet(str(tmp_path_factory.mktemp('imagenet')), per_class=2)


@pytest.fixture(scope='module')
def deit_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'deit-tiny_tiny.py'
    path.write_text(DEIT_CONFIG)
    return str(path)


@pytest.fixture(scope='module')
def first_run(imagenet, deit_config, tmp_path_factory):
    """One epoch of training + validation; the checkpoint later runs resume from."""
    work_dir = str(tmp_path_factory.mktemp('work'))
    result = run_tool(train_cmd(deit_config, work_dir, datagen.tiny_cls_options(imagenet)))
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, result


def read_log(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    return open(logs[-1]).read()


@pytest.mark.slow
def test_train_validates_and_checkpoints(first_run):
    work_dir, _ = first_run
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert open(osp.join(work_dir, 'last_checkpoint')).read().strip().endswith('epoch_1.pth')
    log = read_log(work_dir)
    assert 'Epoch(train)' in log and 'Epoch(val)' in log
    assert 'accuracy/top1' in log


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(first_run, imagenet, deit_config):
    work_dir, _ = first_run
    # a longer schedule than the checkpoint's: its T_max from the config (issue 29)
    options = datagen.tiny_cls_options(imagenet, epochs=2) + ['resume_schedule=config']
    result = run_tool(train_cmd(deit_config, work_dir, options, '--resume'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(work_dir)
    # --resume reads last_checkpoint itself (checked: one line, a file inside the work dir)
    # and hands mmengine that path, so mmengine's own 'Auto resumed' line is not logged
    assert f"Load checkpoint from {osp.join(work_dir, 'epoch_1.pth')}" in log
    assert 'resumed epoch: 1' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    # the resumed run trained epoch 2 only
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [2]' in log


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(first_run):
    """Every non-tensor type in a real mmengine checkpoint is allow-listed, nothing more."""
    from mmtlalign.checkpoint.loader import load_checkpoint_file, mmengine_checkpoint_globals
    ckpt = osp.join(first_run[0], 'epoch_1.pth')
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(ckpt))
    allowed = {entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'
               for entry in mmengine_checkpoint_globals()}
    assert needed <= allowed, needed - allowed
    state = load_checkpoint_file(ckpt)
    assert 'state_dict' in state and 'message_hub' in state


@pytest.mark.slow
def test_dist_train_two_cpu_processes(imagenet, deit_config, tmp_path):
    work_dir = str(tmp_path / 'dist')
    cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), deit_config, '2', '--work-dir',
           work_dir, '--cfg-options', *datagen.tiny_cls_options(imagenet, batch_size=2)]
    result = run_tool(cmd, env={'PORT': free_port(), 'PYTHON': PY})
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    log = read_log(work_dir)
    assert 'Distributed training: True' in log
    # 8 training images, 2 per batch: each of the 2 processes runs 2 iterations
    assert 'Epoch(train) [1][2/2]' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


def test_slurm_job_steps_on_one_node_get_distinct_master_ports(monkeypatch):
    """Jobs that share a node have nearby ids: none of their first steps may listen on the
    same MASTER_PORT, and every port stays below the kernel's ephemeral range."""
    from mmtlalign.cli.launch import slurm_master_port

    def port(job, step):
        monkeypatch.delenv('MASTER_PORT', raising=False)
        monkeypatch.setenv('SLURM_JOB_ID', str(job))
        monkeypatch.setenv('SLURM_STEP_ID', str(step))
        slurm_master_port()
        return int(os.environ['MASTER_PORT'])

    nearby = [port(job, step) for job in range(987_600, 987_718) for step in range(4)]
    assert len(set(nearby)) == len(nearby)
    assert all(20000 <= p < 32768 for p in nearby)
    assert len({port(job, 0) for job in range(5_000, 17_000)}) == 12_000
    monkeypatch.setenv('MASTER_PORT', '29999')  # the user's own port is kept
    slurm_master_port()
    assert os.environ['MASTER_PORT'] == '29999'


@pytest.mark.slow
def test_missing_config_is_a_clear_error(tmp_path):
    result = run_tool([PY, 'tools/train.py', 'configs/tlalign/no_such_config.py'])
    assert result.returncode != 0
    assert "config file 'configs/tlalign/no_such_config.py' does not exist" in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_missing_dataset_folder_is_a_clear_error(tmp_path, deit_config):
    missing = str(tmp_path / 'no_imagenet')
    result = run_tool(train_cmd(deit_config, str(tmp_path / 'w'),
                                datagen.tiny_cls_options(missing)))
    assert result.returncode != 0
    assert f"dataset folder '{missing}'" in result.stderr
    assert 'train_dataloader.dataset.data_root' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_resume_without_checkpoint_is_a_clear_error(tmp_path, imagenet, deit_config):
    empty = str(tmp_path / 'fresh_work_dir')
    os.makedirs(empty)
    result = run_tool(train_cmd(deit_config, empty, datagen.tiny_cls_options(imagenet),
                                '--resume'))
    assert result.returncode != 0
    assert 'holds no checkpoint to resume from' in result.stderr
    assert 'Traceback' not in result.stderr
    result = run_tool(train_cmd(deit_config, empty, datagen.tiny_cls_options(imagenet),
                                '--resume', str(tmp_path / 'nope.pth')))
    assert 'nope.pth' in result.stderr and 'does not exist' in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only message')
def test_amp_on_cpu_is_a_clear_error(tmp_path, imagenet, deit_config):
    result = run_tool(train_cmd(deit_config, str(tmp_path / 'w'),
                                datagen.tiny_cls_options(imagenet), '--amp'))
    assert result.returncode != 0
    assert '--amp needs a CUDA GPU' in result.stderr


def test_package_registers_components_everywhere():
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    import mmtlalign
    assert mmtlalign.__version__
    for name in ('TLAlignClassifier', 'TLAlignMix', 'AlignedVisionTransformer'):
        assert MODELS.get(name) is not None, name
    assert DET_MODELS.get('AlignedVisionTransformer') is MODELS.get('AlignedVisionTransformer')
    assert SEG_MODELS.get('AlignedVisionTransformer') is MODELS.get('AlignedVisionTransformer')
