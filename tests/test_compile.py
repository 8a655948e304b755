"""``compile=True``: what is compiled, how many graphs, and that compiled training matches eager.

mmengine 0.10.7 compiles the whole ``train_step`` and fails in the optimizer step on torch 2.14;
:class:`mmtlalign.engine.CompileRunner` compiles the model's compute and keeps the optimizer step
and the mixing eager (see mmtlalign/engine/compile.py). Graphs are counted with dynamo's own
``CompileCounter`` / ``explain``.
"""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
import torch._dynamo
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

import mmtlalign  # noqa: F401
from mmtlalign.engine.compile import compile_model, compile_options, use_compile_runner
from mmtlalign.errors import UserInputError
from mmtlalign.models.vit import AlignedVisionTransformer

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def narrow_vit(num_layers, **kwargs):
    arch = dict(embed_dims=16, num_layers=num_layers, num_heads=2, feedforward_channels=16)
    backbone = AlignedVisionTransformer(arch=arch, img_size=16, patch_size=8,
                                        drop_path_rate=0.1, **kwargs)
    backbone.train()  # drop path active (mmpretrain's train() returns None)
    return backbone


@pytest.mark.slow
def test_aligned_vit_traces_12_blocks_in_one_graph():
    torch.manual_seed(0)
    backbone = narrow_vit(12)
    x, share = torch.randn(2, 3, 16, 16), torch.rand(2, 4)
    explanation = torch._dynamo.explain(backbone.forward_aligned)(x, share)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), \
        [r.reason[:200] for r in explanation.break_reasons]

    # compiled once, then reused for new shares (no guard on per-block Python state)
    counter = CompileCounter()
    compiled = torch.compile(backbone.forward_aligned, backend=counter)
    for seed in range(3):
        torch.manual_seed(seed)
        share = torch.rand(2, 4)
        torch.manual_seed(100)  # same drop-path draws in both calls
        (feats,), out_share = compiled(x, share)
        torch.manual_seed(100)
        (ref_feats,), ref_share = backbone.forward_aligned(x, share)
        torch.testing.assert_close(out_share, ref_share)
        torch.testing.assert_close(feats, ref_feats)
    assert counter.frame_count == 1


def test_gpu_attention_path_is_one_graph_too():
    """The path CUDA takes (upstream's call + a gradient-free share call), forced on CPU."""
    from mmtlalign.models import alignment
    backbone = narrow_vit(12)
    backbone.eval()  # no drop-path draws: compiled and eager see the same features
    x, share = torch.randn(2, 3, 16, 16), torch.rand(2, 4)
    with alignment.share_attention_impl('separate'):
        explanation = torch._dynamo.explain(backbone.forward_aligned)(x, share)
        (feats, ), out_share = torch.compile(backbone.forward_aligned, backend='eager')(x, share)
        (ref_feats, ), ref_share = backbone.forward_aligned(x, share)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)
    torch.testing.assert_close(out_share, ref_share)
    torch.testing.assert_close(feats, ref_feats)


def test_numpy_drop_path_rates_would_break_the_graph_in_every_block():
    """The cause python_drop_probs removes: mmpretrain's np.linspace drop-path rates."""
    backbone = narrow_vit(3)
    for m in backbone.modules():
        if hasattr(m, 'drop_prob'):
            m.drop_prob = np.float64(m.drop_prob)  # as mmpretrain builds them
    explanation = torch._dynamo.explain(backbone.forward_aligned)(
        torch.randn(2, 3, 16, 16), torch.rand(2, 4))
    assert explanation.graph_break_count >= 3  # at least one per block


# ----------------------------------------------------------------------------- training arms
VIT = dict(type='AlignedVisionTransformer', img_size=32, patch_size=8, drop_path_rate=0.1,
           arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=32))
SWIN = dict(type='AlignedSwinTransformer', img_size=32, window_size=4, out_indices=(1, ),
            drop_path_rate=0.1, arch=dict(embed_dims=16, depths=[2, 2], num_heads=[1, 2]))
VIT_HEAD = dict(type='VisionTransformerClsHead', num_classes=4, in_channels=32)
SWIN_NECK_HEAD = dict(neck=dict(type='GlobalAveragePooling'),
                      head=dict(type='LinearClsHead', num_classes=4, in_channels=32))
ARMS = {  # name: (classifier kwargs, parts compiled)
    'tlalign-vit': (dict(align=True, backbone=VIT, head=VIT_HEAD),
                    ['backbone', 'head', 'label_rule.mixed_share']),
    'transmix-vit': (dict(align='TransMixLabel', backbone=VIT, head=VIT_HEAD),
                     ['backbone', 'head', 'label_rule.mixed_share']),
    'cutmix-vit': (dict(align=False, backbone=dict(VIT, type='VisionTransformer'), head=VIT_HEAD),
                   ['backbone', 'head', 'label_rule.mixed_share']),
    'tlalign-swin': (dict(align=True, backbone=SWIN, **SWIN_NECK_HEAD),
                     ['backbone', 'neck', 'head']),
    'cutmix-swin': (dict(align=False, backbone=dict(SWIN, type='SwinTransformer'),
                         **SWIN_NECK_HEAD), ['backbone', 'neck', 'head']),
}


def batches(num, size=4):
    gen = torch.Generator().manual_seed(0)
    return [dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)
                         for _ in range(size)],
                 data_samples=[DataSample().set_gt_label(i % 4) for i in range(size)])
            for _ in range(num)]


def train_losses(model, data):
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    losses = []
    for i, batch in enumerate(data):
        torch.manual_seed(i)  # the same drop-path draws in both runs
        log = model.train_step(copy.deepcopy(batch), optim)
        losses.append((log['loss'].item(), log['token_fluctuation'].item()))
    return losses


@pytest.mark.parametrize('arm', sorted(ARMS))
def test_compiled_training_matches_eager(arm):
    kwargs, parts = ARMS[arm]
    mix = dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.8 if 'swin' in arm else 0.0,
               switch_prob=0.5, seed=0)
    torch.manual_seed(0)
    eager = MODELS.build(dict(type='TLAlignClassifier', mix=mix, **kwargs))
    compiled = MODELS.build(dict(type='TLAlignClassifier', mix=mix, **kwargs))
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())

    assert compile_model(compiled, backend='aot_eager') == parts
    data = batches(4)
    expected = train_losses(eager, data)
    got = train_losses(compiled, data)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert any(fluct > 0 for _, fluct in expected) or 'cutmix' in arm  # shares were traced
    assert list(compiled.state_dict()) == keys  # checkpoints stay interchangeable
    assert not counters['graph_break'], dict(counters['graph_break'])
    # label-rule forward (or, for Swin, the backbone on Mixup batches) + head, each compiled
    # once for the 4 steps; a recompile per step or per block would show here
    assert counters['stats']['unique_graphs'] <= 3


def test_compile_option_values():
    assert compile_options(True) == {} and compile_options(None) is None
    assert compile_options(dict(backend='eager')) == dict(backend='eager')
    with pytest.raises(UserInputError, match='compile must be True, False or a dict'):
        compile_options('yes')
    from mmengine.config import Config
    cfg = use_compile_runner(Config(dict(compile=True)))
    assert cfg.runner_type == 'CompileRunner'
    assert 'runner_type' not in use_compile_runner(Config(dict(compile=False)))


# ----------------------------------------------------------------------------- the tool
TINY_TLALIGN = datagen.tiny_deit_config(osp.join(ROOT, 'configs/tlalign/deit-t_8xb128.py'))


@pytest.mark.slow
def test_train_tool_with_compile_true(tmp_path):
    """``tools/train.py CONFIG --cfg-options compile=True``: torch's default backend (inductor),
    the mmengine Runner, a TL-Align DeiT recipe shrunk to 2 blocks; trains, validates, saves a
    checkpoint that loads into an eager model."""
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2, val_per_class=1)
    config = tmp_path / 'tiny_tlalign.py'
    config.write_text(TINY_TLALIGN)
    work_dir = str(tmp_path / 'work')
    result = datagen.train_tool(config, work_dir, data, options=['compile=True'])
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]).read()
    assert 'applied to backbone, head, label_rule.mixed_share' in log
    assert 'accuracy/top1' in log
    state = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    assert not any('_orig_mod' in k for k in state)
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    cfg.model.head.num_classes = 4
    MODELS.build(cfg.model).load_state_dict(state)  # strict: same keys as an eager model
