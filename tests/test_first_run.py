"""What a new user meets on a first run: dataset layout mistakes as one-line errors, the
learning-rate scaling stated, a token-labels checkpoint that tests, the main job's arms listed
as it runs them (issue 31, items 3 and 5)."""
import os
import os.path as osp
import shutil
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS

import mmtlalign  # noqa: F401
from mmtlalign.checkpoint.fit import CheckpointFitError, check_checkpoint_fits
from mmtlalign.engine.dataset_layout import check_dataset_layout
from mmtlalign.engine.lr_scaling import lr_scaling_note
from mmtlalign.errors import UserInputError
from mmtlalign.models import TLAlignClassifier

import datagen
from helpers import ROOT, run_tool

TLALIGN = osp.join(ROOT, 'configs', 'tlalign')


# ------------------------------------------------------------------------- dataset layout
def imagenet_cfg(root, **dataset):
    ds = dict(type='ImageNet', data_root=root, split='train', pipeline=[])
    ds.update(dataset)
    return Config(dict(train_dataloader=dict(dataset=ds)))


def wrong_layouts(tmp_path):
    """name: (config, words of the one-line error) for each mistake, on real folders."""
    good = datagen.make_imagenet(str(tmp_path / 'good'), per_class=1)
    flat = str(tmp_path / 'flat')  # the class folders without the train/ level
    shutil.copytree(osp.join(good, 'train'), flat)
    loose = str(tmp_path / 'loose')  # images straight in train/, no class folders
    os.makedirs(osp.join(loose, 'train'))
    for i, f in enumerate(sorted(os.listdir(osp.join(good, 'val')))):
        shutil.copy(osp.join(good, 'val', f), osp.join(loose, 'train', f))
    no_meta = str(tmp_path / 'no_meta')  # 4 class folders read as the 1000 ImageNet classes
    shutil.copytree(good, no_meta)
    shutil.rmtree(osp.join(no_meta, 'meta'))
    return {
        'no train/ folder': (imagenet_cfg(flat), ['does not exist', 'itself holds class '
                                                  "folders", "data_prefix=''"]),
        'no class folders': (imagenet_cfg(loose), ['no class sub-folders', 'lie directly',
                                                   '<class>/<image>']),
        'ImageNet classes': (imagenet_cfg(no_meta), ['4 class folders', '1000 ImageNet',
                                                     'model.head.num_classes=4']),
    }


@pytest.mark.parametrize('case', ['no train/ folder', 'no class folders', 'ImageNet classes'])
def test_dataset_layout_mistakes_are_one_line_errors(case, tmp_path):
    cfg, words = wrong_layouts(tmp_path)[case]
    with pytest.raises(UserInputError) as info:
        check_dataset_layout(cfg, ['train_dataloader'])
    message = str(info.value)
    assert '\n' not in message and all(w in message for w in words), message
    # without the check: mmpretrain's own raw error, from deep inside the dataset
    init_default_scope('mmpretrain')
    with pytest.raises((FileNotFoundError, AssertionError, RuntimeError)):
        DATASETS.build(cfg.train_dataloader.dataset)


def test_good_layouts_pass(tmp_path):
    good = datagen.make_imagenet(str(tmp_path / 'good'), per_class=1)
    check_dataset_layout(imagenet_cfg(good), ['train_dataloader'])  # meta/train.txt
    check_dataset_layout(imagenet_cfg(good, type='CustomDataset', split=None,
                                      data_prefix='train'), ['train_dataloader'])
    shutil.rmtree(osp.join(good, 'meta'))
    check_dataset_layout(imagenet_cfg(good, classes=['a', 'b', 'c', 'd']), ['train_dataloader'])


@pytest.mark.slow
def test_train_tool_names_an_empty_class_folder_in_one_line(tmp_path):
    """tools/train.py on a CustomDataset folder with an empty class: an 'error:' line (the
    DataCheckHook's), no traceback; and the learning-rate scaling note at start."""
    data = datagen.make_imagenet(str(tmp_path / 'data'), per_class=2)
    for f in os.listdir(osp.join(data, 'train', 'n00000002')):
        os.remove(osp.join(data, 'train', 'n00000002', f))
    config = tmp_path / 'custom.py'
    config.write_text(datagen.tiny_deit_config(osp.join(TLALIGN, 'deit-t_8xb128.py')) + """
_ds = dict(_delete_=True, type='CustomDataset', data_root='', data_prefix='train',
           pipeline={{_base_.test_pipeline}})
train_dataloader = dict(dataset=_ds)
val_dataloader = dict(dataset=_ds)
test_dataloader = val_dataloader
""")
    result = run_tool([sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(config),
                       '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                       *datagen.tiny_cls_options(data)], timeout=600)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert 'error: train_dataloader: 1 problem(s)' in result.stderr, result.stderr[-2000:]
    assert osp.join(data, 'train', 'n00000002') in result.stderr
    assert ('note: learning rate scaled from 0.001 to 3.90625e-06 = 0.001 x total batch 4 '
            '(1 process(es) x 4) / base 1024') in result.stdout


# ------------------------------------------------------------------------- lr scaling
def test_lr_scaling_is_stated_from_what_to_what_and_why():
    cfg = Config.fromfile(osp.join(TLALIGN, 'deit-s_8xb128.py'))
    assert cfg.auto_scale_lr.enable  # the recipe scales as the released code does
    note = lr_scaling_note(cfg, world_size=2)
    assert note.startswith('note: learning rate scaled from 0.001 to 0.00025 = 0.001 x total '
                           'batch 256 (2 process(es) x 128) / base 1024')
    assert 'released recipe' in note and 'auto_scale_lr.enable=False' in note
    assert 'unchanged' in lr_scaling_note(cfg, world_size=8)
    cfg.auto_scale_lr.enable = False
    assert lr_scaling_note(cfg, world_size=2) is None
    assert '--auto-scale-lr' in lr_scaling_note(
        Config(dict(cfg.to_dict(), auto_scale_lr=dict(base_batch_size=1024, enable=True))), 2,
        from_flag=True)


# ------------------------------------------------------------------------- checkpoints
def classifier(token_loss=None, num_classes=4):
    torch.manual_seed(0)
    return TLAlignClassifier(
        backbone=dict(type='AlignedVisionTransformer',
                      arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                feedforward_channels=32), img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=32),
        token_loss=token_loss)


def test_training_only_token_head_is_left_out_for_testing(tmp_path):
    path = str(tmp_path / 'separate.pth')
    torch.save(dict(state_dict=classifier(dict(head='separate')).state_dict(), meta={}), path)
    plain = classifier()
    report = check_checkpoint_fits(plain, path, 'the checkpoint', testing=True)
    assert report.ok and report.loaded == len(plain.state_dict())
    # the same checkpoint where it would train on: refused, and the hint names the token head
    with pytest.raises(CheckpointFitError) as info:
        check_checkpoint_fits(plain, path, 'load_from')
    message = str(info.value)
    assert 'token_head.weight' in message and "head='separate'" in message
    assert 'check `arch`' not in message
    # the other way round (a separate-head config testing a shared-head checkpoint) tests too
    shared = str(tmp_path / 'shared.pth')
    torch.save(dict(state_dict=plain.state_dict(), meta={}), shared)
    assert check_checkpoint_fits(classifier(dict(head='separate')), shared,
                                 testing=True).ok
    # a real misfit is still refused when testing
    with pytest.raises(CheckpointFitError, match='classes'):
        check_checkpoint_fits(classifier(num_classes=3), path, testing=True)


# ------------------------------------------------------------------------- python -m
def test_python_m_mmtlalign_lists_the_arms_the_main_job_runs():
    from mmtlalign.__main__ import report, suites
    from mmtlalign.benchmark.demo import MAIN_JOB_ARMS

    from helpers import load_tool
    assert list(MAIN_JOB_ARMS) == load_tool('tools/demo.py').DEFAULT_ARMS
    canvas = next(s for s in suites() if s['name'] == 'fmnist_canvas')
    assert canvas['main_job'] == ['CutMix', 'TL-Align']
    assert len(canvas['arms']) > 2  # the others run with --arms
    assert 'the main job (tools/run_demo.sh) runs 2 of them (CutMix, TL-Align)' in report()
