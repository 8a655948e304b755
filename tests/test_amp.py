"""TL-Align under mixed precision (fp16 / bf16 autocast), on CPU.

The label arithmetic must stay float32 under autocast (where ``einsum`` runs in half
precision), on either attention path of ViT: the CPU one and the one other devices run
(``'separate'``: upstream's call plus a gradient-free share call), forced here on CPU.
"""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmpretrain.structures import DataSample

import mmtlalign  # noqa: F401
from mmtlalign.models import (
    AlignedSwinTransformer,
    AlignedVisionTransformer,
    TLAlignClassifier,
    alignment,
)

MMLogger.get_current_instance().setLevel(logging.WARNING)

DTYPES = [torch.float16, torch.bfloat16]
VIT = dict(type='AlignedVisionTransformer', arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                                      feedforward_channels=96),
           img_size=32, patch_size=8)
# 40 px, patch 4: a 10x10 grid in 4x4 windows, so every stage pads (the masked rule runs)
SWIN = dict(type='AlignedSwinTransformer', arch=dict(embed_dims=32, depths=[2, 2],
                                                     num_heads=[2, 4]),
            img_size=40, patch_size=4, window_size=4, out_indices=(1,), pad_small_map=True)
MODELS = {
    'vit': (VIT, 32, dict(type='VisionTransformerClsHead', in_channels=48), None),
    'swin': (SWIN, 40, dict(type='LinearClsHead', in_channels=64),
             dict(type='GlobalAveragePooling')),
}


@pytest.fixture(params=['cpu_path', 'forced_non_cpu_path'])
def attention_path(request, monkeypatch):
    """ViT's attention on the CPU path, or on the path other devices take (forced here the
    way a device without the CPU kernel would take it)."""
    if request.param == 'forced_non_cpu_path':
        monkeypatch.setattr(alignment._CPUAttentionWithShare, 'available',
                            staticmethod(lambda: False))
        assert alignment.resolve_share_attention('cpu') == 'separate'
    else:
        assert alignment.resolve_share_attention('cpu') == 'cpu_flash'
    return request.param


def classifier(name, seed=0):
    backbone, size, head, neck = MODELS[name]
    torch.manual_seed(seed)
    return TLAlignClassifier(backbone=dict(backbone), neck=neck,
                             head=dict(head, num_classes=4,
                                       loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
                             mix=dict(type='TLAlignMix', seed=2)), size  # seed 2: a 1/4 box


def backbone(name, seed=0):
    cfg = dict(MODELS[name][0])
    cls = {'AlignedVisionTransformer': AlignedVisionTransformer,
           'AlignedSwinTransformer': AlignedSwinTransformer}[cfg.pop('type')]
    torch.manual_seed(seed)
    model = cls(**cfg)
    model.eval()
    return model, MODELS[name][1]


@pytest.mark.parametrize('dtype', DTYPES, ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', ['vit', 'swin'])
def test_aligned_loss_trains_under_autocast(name, dtype, attention_path):
    clf, size = classifier(name)
    clf.train()
    inputs = torch.randn(4, 3, size, size)
    samples = [DataSample().set_gt_label(i % 4) for i in range(4)]
    seen = []
    if name == 'swin':
        clf.backbone.stages[-1].blocks[-1].register_forward_hook(
            lambda m, a, out: seen.append(out.dtype))
    with torch.autocast('cpu', dtype=dtype):
        losses = clf.loss(inputs, samples)
    if name == 'swin':  # autocast really ran the backbone in the half type
        assert seen == [dtype]
    scores = torch.stack([s.gt_score for s in samples])
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(4))
    assert torch.isfinite(losses['loss']) and torch.isfinite(losses['token_fluctuation'])
    assert losses['token_fluctuation'] > 0  # the labels were traced, not the area share
    losses['loss'].backward()
    grads = [p.grad for p in clf.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('dtype', DTYPES, ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', ['vit', 'swin'])
def test_traced_shares_stay_float32_within_half_precision(name, dtype, attention_path):
    model, size = backbone(name)
    x = torch.randn(2, 3, size, size)
    grid = size // model.patch_size[0]
    token_share = (torch.rand(2, grid * grid, generator=torch.Generator().manual_seed(1))
                   > 0.5).float()
    with torch.no_grad():
        ref = model.trace_shares(x, token_share)
        with torch.autocast('cpu', dtype=dtype):
            amp = model.trace_shares(x, token_share)
            out_share = model.output_share(amp)
    assert out_share.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in amp.history)
    # the attention is the half-precision one the features use, so the shares move by about
    # the half type's resolution; a float32-vs-half mix-up or lost mass would move them more
    diff = max((a - r).abs().max().item() for a, r in zip(amp.history, ref.history))
    assert diff <= torch.finfo(dtype).eps, diff
    moved = max((r - token_share.mean(dim=1, keepdim=True)).abs().max().item()
                for r in ref.history[-1:])
    assert moved > 10 * torch.finfo(dtype).eps  # the tolerance is small against the effect


@pytest.mark.parametrize('dtype', DTYPES, ids=['fp16', 'bf16'])
def test_masked_rule_in_half_precision_gives_zero_not_nan(dtype):
    """A window query whose keys are all padding: 0, also with half-precision attention
    (the clamp of the denominator is float32's tiny, which is 0 in half precision)."""
    attn = torch.softmax(torch.randn(1, 2, 4, 4), dim=-1).to(dtype)
    share = torch.tensor([[0.2, 1.0, 0.0, 0.7]])
    valid = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    with torch.autocast('cpu', dtype=dtype):
        got = alignment.attend_share_masked(attn, share, valid)
        none_valid = alignment.attend_share_masked(attn, share, torch.zeros(1, 4))
    assert got.dtype == none_valid.dtype == torch.float32
    a = attn.float().mean(dim=1)[0]
    expected = (a[:, :2] @ share[0, :2]) / a[:, :2].sum(dim=1)
    torch.testing.assert_close(got[0], expected)
    assert torch.equal(none_valid, torch.zeros(1, 4))
