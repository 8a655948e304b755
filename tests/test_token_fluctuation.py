"""tools/analysis/token_fluctuation.py on ViT and Swin checkpoints: summary numbers and PNGs.

The validation data are real-format Fashion-MNIST idx files written to disk; the model comes
from the demo config (real registries), saved as an mmengine-style checkpoint and loaded back
by the tool.
"""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

import datagen
from helpers import assert_png, load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'tlalign', 'demo', 'fmnist_vit_tlalign.py')

SWIN_CONFIG = f"""
_base_ = {CONFIG!r}
model = dict(
    backbone=dict(_delete_=True, type='AlignedSwinTransformer',
                  arch=dict(embed_dims=24, depths=[2, 2], num_heads=[2, 2]),
                  img_size=28, patch_size=2, in_channels=1, window_size=7, out_indices=(1, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(_delete_=True, type='LinearClsHead', num_classes=10, in_channels=48,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))
"""


@pytest.fixture(scope='module')
def tool():
    """The analysis logic; the CLI in tools/analysis/ is its thin wrapper (checked below)."""
    from mmtlalign.analysis import token_fluctuation
    assert load_tool('tools/analysis/token_fluctuation.py').main is token_fluctuation.main
    return token_fluctuation


@pytest.fixture(scope='module')
def fmnist(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('fmnist'))
    datagen.write_fmnist(root, n_train=8, n_test=24, gz=False)
    return root


def save_checkpoint(config, path, seed=0):
    """A model built from ``config`` by the registries, saved as mmengine saves it."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(config).model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, path)
    return path


def analyse(tool, config, ckpt, fmnist, out_dir, *extra):
    return tool.main([config, ckpt, '--out-dir', out_dir, '--num-batches', '2',
                      '--batch-size', '8', '--num-maps', '3', '--device', 'cpu',
                      '--cfg-options', f'val_dataloader.dataset.data_root={fmnist}',
                      'val_dataloader.dataset.indices=None', *extra])


def check_outputs(summary, out_dir, num_blocks, num_images=16):
    assert summary['num_images'] == num_images
    assert summary['num_blocks'] == num_blocks
    assert len(summary['per_block_mean_drift']) == num_blocks
    assert 0 <= summary['mean_token_fluctuation'] <= summary['max_token_fluctuation'] <= 1
    with open(osp.join(out_dir, 'summary.json')) as f:
        assert json.load(f)['mean_token_fluctuation'] == summary['mean_token_fluctuation']
    for name in ('layer_drift', 'share_scatter', 'share_maps'):
        path = osp.join(out_dir, f'{name}.png')
        assert summary['files'][name] == path
        assert_png(path, min_size=(500, 300))
    with Image.open(osp.join(out_dir, 'share_maps.png')) as im:
        # 3 rows of maps, 2 + num_blocks columns: wider than tall
        assert im.size[0] > im.size[1]


@pytest.mark.slow
def test_vit_checkpoint(tool, fmnist, tmp_path, capfd):
    ckpt = save_checkpoint(CONFIG, str(tmp_path / 'vit.pth'))
    out_dir = str(tmp_path / 'out')
    summary = analyse(tool, CONFIG, ckpt, fmnist, out_dir)
    check_outputs(summary, out_dir, num_blocks=6)
    assert summary['backbone'] == 'AlignedVisionTransformer'
    assert summary['output'] == 'cls_token'
    printed = capfd.readouterr().out
    assert 'Token fluctuation of AlignedVisionTransformer (class token)' in printed
    assert '2/2' in printed  # the progress bar ran over the batches
    # the images go through the config's data preprocessor (Fashion-MNIST normalisation)
    model = tool.build_model(tool.load_cfg(tool.parse_args([CONFIG, ckpt])), ckpt, 'cpu')
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx([72.94])

    # a plain mmpretrain VisionTransformer checkpoint is traced through the aligned subclass
    plain = analyse(tool, CONFIG, ckpt, fmnist, str(tmp_path / 'plain'),
                    'model.backbone.type=VisionTransformer', 'model.align=False')
    assert plain['backbone'] == 'AlignedVisionTransformer'
    np.testing.assert_allclose(plain['per_block_mean_drift'], summary['per_block_mean_drift'],
                               atol=1e-6)


def test_swin_checkpoint(tool, fmnist, tmp_path):
    config = tmp_path / 'swin_tiny.py'
    config.write_text(SWIN_CONFIG)
    ckpt = save_checkpoint(str(config), str(tmp_path / 'swin.pth'))
    out_dir = str(tmp_path / 'out')
    summary = analyse(tool, str(config), ckpt, fmnist, out_dir)
    check_outputs(summary, out_dir, num_blocks=4)
    assert summary['backbone'] == 'AlignedSwinTransformer'


def test_clear_errors(tool, fmnist, tmp_path):
    with pytest.raises(SystemExit, match='checkpoint .* does not exist'):
        analyse(tool, CONFIG, str(tmp_path / 'missing.pth'), fmnist, str(tmp_path / 'o'))
    with pytest.raises(SystemExit, match='does not exist'):
        analyse(tool, str(tmp_path / 'nope.py'), 'x.pth', fmnist, str(tmp_path / 'o'))
