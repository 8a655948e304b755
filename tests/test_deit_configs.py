"""The DeiT TL-Align recipes: what they inherit, that they build, and that one trains."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

import datagen
import mmtlalign  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEIT = {'t': ('deit-tiny', 192), 's': ('deit-small', 384), 'b': ('deit-base', 768)}


@pytest.mark.parametrize('size', sorted(DEIT))
@pytest.mark.parametrize('aligned', [True, False])
def test_deit_recipe_is_the_papers(size, aligned):
    name = f'deit-{size}_8xb128{"" if aligned else "_cutmix"}.py'
    cfg = Config.fromfile(osp.join(ROOT, 'configs/tlalign', name))
    model = cfg.model
    assert model.type == 'TLAlignClassifier' and model.align is aligned
    assert model.backbone.type == ('AlignedVisionTransformer' if aligned else 'VisionTransformer')
    assert (model.backbone.arch, model.head.in_channels) == DEIT[size]
    assert model.train_cfg is None  # no mmpretrain batch augments on top of ours
    assert model.mix.cutmix_alpha == 1.0 and model.mix.mixup_alpha == 0.0
    assert model.head.loss.label_smooth_val == 0.1
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-3)
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 5
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 5
    assert not any(h.type == 'EMAHook' for h in cfg.get('custom_hooks', []))
    assert cfg.default_scope == 'mmpretrain'


def test_deit_configs_build():
    from mmpretrain.registry import MODELS
    for size in ('t', 's'):
        cfg = Config.fromfile(osp.join(ROOT, f'configs/tlalign/deit-{size}_8xb128.py'))
        model = MODELS.build(cfg.model)
        assert type(model).__name__ == 'TLAlignClassifier'
        assert type(model.backbone).__name__ == 'AlignedVisionTransformer'


@pytest.mark.slow
def test_deit_s_tlalign_trains_and_validates(tmp_path):
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2)
    work_dir = str(tmp_path / 'work')
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'),
           osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py'), '--work-dir', work_dir,
           '--cfg-options', *datagen.tiny_cls_options(data)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]).read()
    assert 'token_fluctuation' in log
    assert 'Epoch(val) [1]' in log and 'accuracy/top1' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
