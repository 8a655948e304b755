"""TL-Align on Swin: the share form against an independent K-dimensional implementation (with
and without padding), exactness of forward/state_dict/checkpoint loading, padding, with_cp,
the configs, and a training run through tools/train.py."""
import glob
import logging
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import mmpretrain
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmpretrain.models import SwinTransformer
from mmpretrain.registry import MODELS

import mmtlalign  # noqa: F401
from mmtlalign.models import AlignedSwinTransformer
from mmtlalign.models.alignment import aligned_target, token_share_from_mask
from mmtlalign.models.swin import window_attend

import datagen
from kdim_reference import K, swin_token_labels, swin_window_attention

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = [f'configs/tlalign/swin-{a}_16xb64{s}.py' for a in 'tsb' for s in ('', '_cutmix')]

MMLogger.get_current_instance().setLevel(logging.WARNING)


def make_pair(img_size=224, seed=0, **kwargs):
    """mmpretrain's SwinTransformer and the aligned subclass with the same weights.

    Swin-T with its own initialisation, plus random relative position biases and sharpened
    q/k projections, so that attention is far from uniform.
    """
    torch.manual_seed(seed)
    kwargs = dict(arch='tiny', img_size=img_size, **kwargs)
    parent = SwinTransformer(**kwargs)
    with torch.no_grad():
        for stage in parent.stages:
            for block in stage.blocks:
                msa = block.attn.w_msa
                msa.relative_position_bias_table.normal_(0, 1.0)
                msa.qkv.weight[:2 * msa.embed_dims] *= 4.0
    aligned = AlignedSwinTransformer(**kwargs)
    aligned.load_state_dict(parent.state_dict())
    parent.eval()  # BaseBackbone.train() returns None, so no chaining
    aligned.eval()
    return parent, aligned


def grid_share(B, grid, seed):
    g = torch.Generator().manual_seed(seed)
    box = torch.zeros(B, *grid)
    box[:, 5:31, 9:40] = 1
    box[1:, 30:, :17] = 1
    return box.flatten(1)[torch.randperm(B, generator=g)]


def fractional_share(B, grid, seed):
    """A pixel box not aligned to the 4-pixel patches, different per image."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, grid[0] * 4, grid[1] * 4)
    for b in range(B):
        y, x = torch.randint(0, 80, (2,), generator=g).tolist()
        mask[b, y:y + 97, x:x + 83] = 1
    return token_share_from_mask(mask, grid)


@pytest.mark.parametrize('img_size,pad_small_map', [(224, False), (224, True), (192, True)])
@pytest.mark.parametrize('share_kind', ['grid', 'fractional'])
def test_share_matches_k_dim_reference(img_size, pad_small_map, share_kind):
    """224: no padding (stage 4 unshifted / shifted); 192: every stage pads its windows."""
    parent, aligned = make_pair(img_size, pad_small_map=pad_small_map)
    B, grid = 2, (img_size // 4, img_size // 4)
    x = torch.randn(B, 3, img_size, img_size)
    token_share = (grid_share if share_kind == 'grid' else fractional_share)(B, grid, seed=1)
    labels, partner = torch.tensor([3, 8]), torch.tensor([1, 0])

    with torch.no_grad():
        outs, share = aligned.forward_aligned(x, token_share)
        tracer = aligned.trace_shares(x, token_share)
    attns, _ = swin_window_attention(parent, x)
    ref = swin_token_labels(parent, attns, token_share, grid, labels, partner)
    # the target global average pooling feeds the head
    ours = aligned_target(labels, partner, share.double(), K)
    torch.testing.assert_close(ours, ref.mean(dim=(1, 2)), atol=1e-5, rtol=0)
    # and every token of the last block
    last = aligned.share_maps(tracer)[-1].double().flatten(1)         # (B, h*w)
    per_token = torch.stack([aligned_target(labels, partner, last[:, i], K)
                             for i in range(last.shape[1])], dim=1)
    torch.testing.assert_close(per_token, ref.flatten(1, 2), atol=1e-5, rtol=0)
    if share_kind == 'fractional':
        assert ((token_share > 0) & (token_share < 1)).any()
    # the test can fail: the traced token shares really moved away from those of plain
    # merging (what the shares would be if attention did not move labels)
    merged = F.adaptive_avg_pool2d(token_share.view(B, 1, *grid), tracer.grids[-1]).flatten(1)
    assert (last - merged).abs().max() > 2e-2  # 2000x the tolerance


# ---- exactness of the subclass ---------------------------------------------------------------

def test_same_constructor_state_dict_and_forward_as_parent():
    torch.manual_seed(0)
    parent = SwinTransformer(arch='tiny')
    torch.manual_seed(0)
    aligned = AlignedSwinTransformer(arch='tiny')
    ref_sd, sd = parent.state_dict(), aligned.state_dict()
    assert list(ref_sd) == list(sd)
    assert all(torch.equal(v, sd[k]) for k, v in ref_sd.items())

    parent, aligned = make_pair(224)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, plain = parent(x), aligned(x)
        traced, _ = aligned.forward_aligned(x, torch.rand(2, 56 * 56))
    assert len(ref) == len(plain) == len(traced) == 1
    assert torch.equal(ref[0], plain[0]) and torch.equal(ref[0], traced[0])


def test_train_mode_forward_matches_parent_and_labels_have_no_gradient():
    parent, aligned = make_pair(224)
    parent.train()
    aligned.train()
    x = torch.randn(2, 3, 224, 224)
    torch.manual_seed(1)  # same drop-path draws
    ref = parent(x)
    torch.manual_seed(1)
    outs, share = aligned.forward_aligned(x, grid_share(2, (56, 56), 0))
    assert torch.equal(ref[0], outs[0])
    assert not share.requires_grad
    outs[0].sum().backward()
    assert aligned.stages[0].blocks[0].attn.w_msa.qkv.weight.grad.abs().sum() > 0


def legacy(state_dict, prefix=''):
    """The pre-v2 key format the parent converts: ``norm.`` for the last norm, with
    ``attn_mask`` buffers, and no version metadata."""
    old = OrderedDict()
    for k, v in state_dict.items():
        old[prefix + k.replace('norm3.', 'norm.') if k.startswith('norm3.') else prefix + k] = v
    old[prefix + 'stages.0.blocks.1.attn.attn_mask'] = torch.zeros(64, 49, 49)
    return old


def test_legacy_checkpoint_loads_into_subclass_as_into_parent(tmp_path):
    parent, aligned = make_pair(224)
    sd = parent.state_dict()
    fresh_parent, fresh_aligned = SwinTransformer(arch='tiny'), AlignedSwinTransformer(arch='tiny')
    fresh_parent.load_state_dict(legacy(sd))  # strict
    fresh_aligned.load_state_dict(legacy(sd))
    for k, v in sd.items():
        assert torch.equal(fresh_aligned.state_dict()[k], v)

    # the 'backbone.'-prefixed legacy form, in a classifier, through mmengine's loader
    path = str(tmp_path / 'legacy.pth')
    torch.save({'state_dict': legacy(sd, 'backbone.')}, path)
    from mmengine.runner import load_checkpoint
    for backbone in ('SwinTransformer', 'AlignedSwinTransformer'):
        model = MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type=backbone, arch='tiny'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=768)))
        model.backbone.norm3.weight.data.zero_()
        load_checkpoint(model, path, map_location='cpu', strict=False)
        assert torch.equal(model.backbone.norm3.weight, sd['norm3.weight']), backbone

    # a checkpoint written by the subclass (version 3) loads into the parent, strict
    parent.load_state_dict(aligned.state_dict())


# ---- padding, with_cp, API ---------------------------------------------------------------------

def test_padding_does_not_dilute_uniform_share():
    """192 px with pad_small_map: every block pads (48->49, 24->28, 12->14, 6->7). Padded
    positions carry no share, so a uniform map stays exactly uniform through every block."""
    _, aligned = make_pair(192, pad_small_map=True)
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        tracer = aligned.trace_shares(x, torch.full((2, 48 * 48), 0.5))
    assert all(torch.equal(s, torch.full_like(s, 0.5)) for s in tracer.history)
    assert torch.equal(aligned.output_share(tracer), torch.full((2,), 0.5))


def test_window_attend_padded_keys_get_no_weight():
    """Direct check of the masking: attention mass on padded keys is redistributed over the
    real keys of the window, whatever the (arbitrary) attention on them."""
    B, H, W, ws = 2, 5, 6, 4                              # padded to 8x8, 4 windows
    attn = torch.softmax(torch.randn(B * 4, 3, 16, 16) * 3, dim=-1)
    uniform = torch.full((B, H, W), 0.3)
    torch.testing.assert_close(window_attend(uniform, attn, ws, 2), uniform, atol=1e-6, rtol=0)
    # a naive zero-padded version would dilute: the padded keys hold a visible mass
    share = torch.rand(B, H, W)
    out = window_attend(share, attn, ws, 0)
    pad = F.pad(share, (0, 2, 0, 3)).view(B, 2, 4, 2, 4).permute(0, 1, 3, 2, 4).reshape(-1, 16)
    naive = torch.einsum('bij,bj->bi', attn.mean(1), pad)
    naive = naive.view(B, 2, 2, 4, 4).permute(0, 1, 3, 2, 4).reshape(B, 8, 8)[:, :H, :W]
    assert (naive - out).abs().max() > 1e-2


def test_with_cp_does_not_corrupt_the_trace():
    """Gradient checkpointing re-runs each block in backward; the trace is unaffected."""
    _, aligned = make_pair(224, drop_path_rate=0.)
    torch.manual_seed(0)
    cp_model = AlignedSwinTransformer(arch='tiny', with_cp=True, drop_path_rate=0.)
    cp_model.load_state_dict(aligned.state_dict())
    aligned.train()
    cp_model.train()
    x, token_share = torch.randn(2, 3, 224, 224), grid_share(2, (56, 56), 0)
    ref = aligned.trace_shares(x, token_share)
    tracer = cp_model.trace_shares(x, token_share)
    tracer.outs[0].sum().backward()
    assert len(tracer.history) == 12
    for a, b in zip(ref.history, tracer.history):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.equal(ref.outs[0], tracer.outs[0])
    assert cp_model.stages[0].blocks[0].attn.w_msa.qkv.weight.grad is not None


def test_tracer_api():
    _, aligned = make_pair(224)
    x, token_share = torch.randn(2, 3, 224, 224), grid_share(2, (56, 56), 3)
    with torch.no_grad():
        tracer = aligned.trace_shares(x, token_share)
        outs, share = aligned.forward_aligned(x, token_share)
    assert aligned.patch_size == (4, 4)
    assert torch.equal(tracer.outs[0], outs[0])
    assert tracer.grids == [(56, 56)] * 2 + [(28, 28)] * 2 + [(14, 14)] * 6 + [(7, 7)] * 2
    assert [tuple(h.shape) for h in tracer.history] == [(2, h * w) for h, w in tracer.grids]
    maps = aligned.share_maps(tracer)
    assert [tuple(m.shape[1:]) for m in maps] == tracer.grids
    per_block = aligned.block_output_shares(tracer)
    assert per_block.shape == (12, 2)
    torch.testing.assert_close(per_block[-1], share)
    torch.testing.assert_close(aligned.output_share(tracer), share)


def test_clear_errors():
    _, aligned = make_pair(224)
    with pytest.raises(ValueError, match='token_share must have shape'):
        aligned.forward_aligned(torch.randn(1, 3, 224, 224), torch.rand(1, 196))
    with pytest.raises(ValueError, match='not divisible by the patch size'):
        aligned.forward_aligned(torch.randn(1, 3, 226, 224), torch.rand(1, 56 * 56))
    with pytest.raises(ValueError, match='residual_weight'):
        AlignedSwinTransformer(arch='tiny', residual_weight=1.5)
    with pytest.raises(ValueError, match='2x2 patch merging'):
        AlignedSwinTransformer(arch='tiny', stage_cfgs=dict(downsample_cfg=dict(kernel_size=3)))


# ---- configs and a real training run ------------------------------------------------------------

def unscoped(value):
    """A config value without the ``_scope_`` keys that scope-prefixed inheritance adds."""
    if isinstance(value, dict):
        return {k: unscoped(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [unscoped(v) for v in value]
    return value


@pytest.mark.parametrize('path', CONFIGS)
def test_configs_follow_mmpretrain_swin_recipes(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    arch = {'t': 'tiny', 's': 'small', 'b': 'base'}[osp.basename(path)[5]]
    upstream = Config.fromfile(osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs',
                                        f'swin_transformer/swin-{arch}_16xb64_in1k.py'))
    aligned = not path.endswith('_cutmix.py')
    model = cfg.model
    assert model.type == 'TLAlignClassifier' and model.align is aligned and model.train_cfg is None
    assert model.backbone.type == 'AlignedSwinTransformer'  # both arms: only model.align differs
    assert (model.backbone.arch, model.backbone.drop_path_rate, model.head.in_channels) == (
        upstream.model.backbone.arch, upstream.model.backbone.drop_path_rate,
        upstream.model.head.in_channels)
    assert (model.mix.cutmix_alpha, model.mix.mixup_alpha, model.mix.switch_prob) == (1.0, 0.8, 0.5)
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
                'auto_scale_lr'):
        assert unscoped(cfg[key]) == unscoped(upstream[key]), key
    # upstream's hooks, with mmtlalign's atomic checkpointing and reliability hooks on top
    hooks = unscoped(cfg.default_hooks)
    assert hooks.pop('checkpoint')['type'] == 'AtomicCheckpointHook'
    expected = unscoped(upstream.default_hooks)
    expected.pop('checkpoint')
    assert hooks == expected
    assert [h.type for h in cfg.custom_hooks] == [
        'ExactResumeHook', 'NonFiniteLossHook', 'DataCheckHook']  # and no EMA, as upstream
    assert not upstream.get('custom_hooks')


@pytest.mark.slow
def test_swin_tlalign_config_trains_through_tools_train(tmp_path):
    root = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2)
    work_dir = str(tmp_path / 'work')
    options = datagen.tiny_cls_options(root, batch_size=2) + [
        'model.mix.switch_prob=0.0',  # CutMix batches only, so every step is traced
        'randomness.seed=0']
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'),
           osp.join(ROOT, 'configs/tlalign/swin-t_16xb64.py'), '--work-dir', work_dir,
           '--cfg-options', *options]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    log = open(sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]).read()
    assert 'token_fluctuation' in log and 'Epoch(val)' in log
    assert 'AlignedSwinTransformer' in open(glob.glob(osp.join(work_dir, '*.py'))[0]).read()
