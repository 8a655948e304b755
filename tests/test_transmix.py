"""TransMix as a label rule: its targets against an independent explicit-attention
implementation on the plain mmpretrain backbone, exactness of features and gradients, Mixup
batches, the errors for backbones without a class token, the rule registry, the configs, and a
run through tools/train.py."""
import copy
import glob
import json
import logging
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mmtlalign  # noqa: F401
from mmtlalign.errors import UserInputError
from mmtlalign.models import (
    LABEL_RULES,
    AlignedVisionTransformer,
    AreaLabel,
    LabelRule,
    MixedBatch,
    TLAlignLabel,
    TransMixLabel,
    build_label_rule,
)
from mmtlalign.models.alignment import aligned_target, token_share_from_mask

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MMLogger.get_current_instance().setLevel(logging.WARNING)


def sharpen(vit, factor=6.0):
    """Scale the q/k projections so attention is far from uniform: a rule that stays near the
    area share would then fail the comparisons."""
    with torch.no_grad():
        for layer in vit.layers:
            c = layer.attn.embed_dims
            layer.attn.qkv.weight[:2 * c] *= factor
    return vit


def plain_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    vit = VisionTransformer(**dict(dict(arch='deit-tiny', img_size=224, patch_size=16), **kwargs))
    vit.init_weights()
    sharpen(vit).eval()  # BaseBackbone.train() returns None: no chaining
    return vit


def mixed_batch(x, patch, seed, pixel_boxes):
    """A CutMix-like batch: a different box per image, on the patch grid or pixel-accurate (then
    tokens on the box edge have fractional shares)."""
    B, _, H, W = x.shape
    g = torch.Generator().manual_seed(seed)
    cell = 1 if pixel_boxes else patch
    mask = torch.zeros(B, H, W)
    for b in range(B):
        h, w = (torch.randint(H // cell // 4, H // cell, (2,), generator=g) * cell).tolist()
        y, x0 = torch.randint(0, H // cell - h // cell + 1, (2,), generator=g).tolist()
        mask[b, y * cell:y * cell + h, x0 * cell:x0 * cell + w] = 1
    partner = torch.roll(torch.arange(B), 1)
    mixed = torch.lerp(x, x[partner], mask[:, None])
    token_share = token_share_from_mask(mask, (H // patch, W // patch))
    return MixedBatch(inputs=mixed, partner=partner, token_share=token_share,
                      area_share=mask.mean(dim=(1, 2)), uniform=False)


def reference_share(vit, mixed):
    """TransMix's partner share, independently: the explicit softmax(q k^T * scale) of the last
    block from the parent's own qkv projection (float64), the class token's row averaged over
    heads, its attention to itself dropped, the patches weighted by their partner share.

    Returns:
        tuple: (B,) target share, (B,) attention share lambda_attn and (B,) the class token's
        attention to itself, which lambda_attn leaves out.
    """
    inputs = []
    last = vit.layers[-1]
    hook = last.attn.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
    with torch.no_grad():
        vit(mixed.inputs)
    hook.remove()
    h = inputs[0]
    attn = last.attn
    B, N, _ = h.shape
    with torch.no_grad():
        qkv = attn.qkv(h).reshape(B, N, 3, attn.num_heads, attn.head_dims).permute(2, 0, 3, 1, 4)
    q, k = qkv[0].double(), qkv[1].double()
    A = torch.softmax(q @ k.transpose(-2, -1) * attn.head_dims**-0.5, dim=-1).mean(dim=1)
    cls_to_patches = A[:, 0, vit.num_extra_tokens:]
    m = mixed.token_share.double()
    lam_attn = (cls_to_patches * m).sum(dim=1) / cls_to_patches.sum(dim=1)
    area = m.mean(dim=1)
    return 0.5 * area + 0.5 * lam_attn, lam_attn, A[:, 0, 0]


# ---------------------------------------------------------------- the rule on the backbone
@pytest.mark.parametrize('backbone', ['VisionTransformer', 'AlignedVisionTransformer'])
@pytest.mark.parametrize('pixel_boxes', [False, True])
def test_transmix_share_matches_explicit_attention_reference(backbone, pixel_boxes):
    parent = plain_vit()
    if backbone == 'VisionTransformer':
        vit = copy.deepcopy(parent)
    else:
        vit = AlignedVisionTransformer(arch='deit-tiny', img_size=224, patch_size=16)
        vit.load_state_dict(parent.state_dict())
        vit.eval()
    x = torch.randn(4, 3, 224, 224)
    mixed = mixed_batch(x, 16, seed=1, pixel_boxes=pixel_boxes)

    with torch.no_grad():
        outs, share = TransMixLabel()(vit, mixed)
    ref, lam_attn, _ = reference_share(parent, mixed)
    torch.testing.assert_close(share.double(), ref, atol=1e-5, rtol=0)
    if pixel_boxes:
        assert ((mixed.token_share > 0) & (mixed.token_share < 1)).any()
    # the rule is exercised: attention moved the share far from the area share
    assert (lam_attn - mixed.area_share.double()).abs().max() > 0.05
    # the target given to the head
    labels, K = torch.tensor([0, 3, 5, 7]), 10
    y = F.one_hot(labels, K).double()
    torch.testing.assert_close(aligned_target(labels, mixed.partner, share.double(), K),
                               (1 - ref[:, None]) * y + ref[:, None] * y[mixed.partner],
                               atol=1e-5, rtol=0)


def test_transmix_features_and_gradients_are_the_plain_forwards():
    """The share channels ride along in the last block's attention call: the features, and
    the gradients of a training step, equal the plain mmpretrain forward's bit for bit."""
    parent = plain_vit(drop_path_rate=0.1)
    vit = copy.deepcopy(parent)
    x = torch.randn(2, 3, 224, 224)
    mixed = mixed_batch(x, 16, seed=2, pixel_boxes=False)
    with torch.no_grad():
        ref = parent(mixed.inputs)
        outs, _ = TransMixLabel()(vit, mixed)
    assert all(torch.equal(r, o) for r, o in zip(ref, outs))

    parent.train()
    vit.train()
    torch.manual_seed(1)
    parent(mixed.inputs)[-1].square().sum().backward()
    torch.manual_seed(1)
    outs, share = TransMixLabel()(vit, mixed)
    outs[-1].square().sum().backward()
    assert not share.requires_grad  # no gradient flows through labels
    for (name, p), q in zip(parent.named_parameters(), vit.parameters()):
        assert torch.equal(p.grad, q.grad), name
    # the attention call is restored after the forward
    assert vit.layers[-1].attn.scaled_dot_product_attention is F.scaled_dot_product_attention


class OutputShapes(TorchDispatchMode):
    """Records the shape of every tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_flatten(out)[0] if torch.is_tensor(t)]
        return out


def test_transmix_is_one_forward_without_an_n_by_n_attention():
    vit = plain_vit()
    vit.train()
    mixed = mixed_batch(torch.randn(2, 3, 224, 224), 16, seed=3, pixel_boxes=False)
    calls = []
    hook = vit.patch_embed.register_forward_hook(lambda *args: calls.append(1))
    with OutputShapes() as ops:
        outs, _ = TransMixLabel()(vit, mixed)
        outs[-1].sum().backward()
    hook.remove()
    assert len(calls) == 1  # no second forward
    N = 197
    assert not [s for s in ops.shapes if s[-2:] == (N, N)]
    with OutputShapes() as ops:  # the check sees an explicit attention where there is one
        reference_share(vit, mixed)
    assert [s for s in ops.shapes if s[-2:] == (N, N)]


# ---------------------------------------------------------------- through the classifier
def tiny_classifier(align, backbone=None, num_classes=4, **kwargs):
    backbone = backbone or dict(type='VisionTransformer', arch=dict(
        embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96), img_size=32,
                                patch_size=8)
    return MODELS.build(dict(
        type='TLAlignClassifier', backbone=backbone, align=align,
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes,
                  in_channels=backbone.get('arch', {}).get('embed_dims', 48)),
        **kwargs))


def tiny_batch(B, num_classes=4):
    inputs = torch.randn(B, 3, 32, 32)
    return inputs, [DataSample().set_gt_label(i % num_classes) for i in range(B)]


def test_classifier_puts_the_transmix_target_in_gt_score():
    torch.manual_seed(2)  # weights under which the class token also attends to itself
    clf = tiny_classifier(dict(type='TransMixLabel'),
                          mix=dict(type='TLAlignMix', cutmix_alpha=1.0, mode='elem', seed=4))
    sharpen(clf.backbone, 8.0)
    assert isinstance(clf.label_rule, TransMixLabel)
    inputs, samples = tiny_batch(8)
    labels = torch.cat([s.gt_label for s in samples])
    mixed = copy.deepcopy(clf.mixer)(inputs, clf.patch_size)  # the batch loss() will draw
    assert not mixed.uniform
    ref, _, cls_to_cls = reference_share(clf.backbone, mixed)
    assert cls_to_cls.max() > 0.01  # so that leaving it out matters

    losses = clf.loss(inputs, samples)
    got = torch.stack([s.gt_score for s in samples]).double()
    torch.testing.assert_close(got, aligned_target(labels, mixed.partner, ref, 4),
                               atol=1e-5, rtol=0)
    fluctuation = (ref - mixed.area_share.double()).abs().mean()
    assert fluctuation > 0.01
    torch.testing.assert_close(losses['token_fluctuation'].double(), fluctuation,
                               atol=1e-5, rtol=0)
    losses['loss'].backward()
    assert clf.backbone.cls_token.grad is not None


def test_mixup_batch_keeps_the_area_target():
    clf = tiny_classifier('TransMixLabel', mix=dict(type='TLAlignMix', cutmix_alpha=0.0,
                                                    mixup_alpha=0.8, seed=5))
    sharpen(clf.backbone, 8.0)
    inputs, samples = tiny_batch(4)
    labels = torch.cat([s.gt_label for s in samples])
    mixed = copy.deepcopy(clf.mixer)(inputs, clf.patch_size)
    assert mixed.uniform and (mixed.area_share > 0).all()
    losses = clf.loss(inputs, samples)
    y = F.one_hot(labels, 4).float()
    lam_b = mixed.area_share[:, None]
    assert torch.equal(torch.stack([s.gt_score for s in samples]),
                       (1 - lam_b) * y + lam_b * y[mixed.partner])
    assert losses['token_fluctuation'] == 0


# ---------------------------------------------------------------- errors and the registry
def test_error_transmix_on_swin():
    swin = dict(type='SwinTransformer', arch=dict(embed_dims=24, depths=[2], num_heads=[2]),
                img_size=32, window_size=4, out_indices=(0, ))
    with pytest.raises(UserInputError, match='TransMix labels need a ViT with a class token; '
                       'SwinTransformer has none'):
        MODELS.build(dict(type='TLAlignClassifier', backbone=swin,
                          neck=dict(type='GlobalAveragePooling'), align='TransMixLabel',
                          head=dict(type='LinearClsHead', num_classes=4, in_channels=24)))


@pytest.mark.parametrize('kwargs,match', [
    (dict(with_cls_token=False, out_type='avg_featmap'), 'with_cls_token=False'),
    (dict(out_type='avg_featmap'), "out_type='avg_featmap'"),
])
def test_error_transmix_without_class_token_output(kwargs, match):
    vit = dict(type='VisionTransformer', arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                                   feedforward_channels=96),
               img_size=32, patch_size=8, **kwargs)
    with pytest.raises(UserInputError, match=match):
        tiny_classifier(dict(type='TransMixLabel'), backbone=vit)
    tiny_classifier(False, backbone=vit)  # area labels work on any backbone


@pytest.mark.parametrize('align,match', [
    ('CutMixLabel', r"unknown label rule 'CutMixLabel' in model.align; choose one of "
                    r"\['AreaLabel', 'ContentLabel', 'PALLabel', 'SMMixLabel', 'TLAlignLabel', "
                    r"'TransMixLabel'\]"),
    (None, 'model.align must be True'),
    (dict(type='TransMixLabel', attn_weight=2), 'attn_weight must lie in'),
])
def test_error_bad_align(align, match):
    with pytest.raises(UserInputError, match=match):
        build_label_rule(align)


def test_rules_are_registered_siblings_selected_by_align():
    assert sorted(LABEL_RULES.module_dict) == ['AreaLabel', 'ContentLabel', 'PALLabel',
                                               'SMMixLabel', 'TLAlignLabel', 'TransMixLabel']
    assert all(issubclass(cls, LabelRule) for cls in LABEL_RULES.module_dict.values())
    assert type(build_label_rule(True)) is TLAlignLabel
    assert type(build_label_rule(False)) is AreaLabel
    assert build_label_rule(dict(type='TransMixLabel', attn_weight=0.3)).attn_weight == 0.3
    assert type(build_label_rule('mmtlalign.TransMixLabel')) is TransMixLabel


# ---------------------------------------------------------------- configs and tools/train.py
@pytest.mark.parametrize('size', ['t', 's', 'b'])
def test_transmix_config_is_the_cutmix_recipe_with_transmix_labels(size):
    def load(suffix):
        cfg = Config.fromfile(osp.join(ROOT, f'configs/tlalign/deit-{size}_8xb128_{suffix}.py'))
        cfg = cfg.to_dict()
        return cfg, cfg['model'].pop('align')

    transmix, rule = load('transmix')
    cutmix, area = load('cutmix')
    assert rule == 'TransMixLabel' and area is False
    assert transmix == cutmix


def test_transmix_config_builds_in_the_mmpretrain_scope():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/tlalign/deit-s_8xb128_transmix.py'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'TLAlignClassifier'
    assert type(model.label_rule) is TransMixLabel


@pytest.mark.slow
def test_deit_transmix_trains_through_tools_train(tmp_path):
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2)
    work_dir = str(tmp_path / 'work')
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'),
           osp.join(ROOT, 'configs/tlalign/deit-t_8xb128_transmix.py'), '--work-dir', work_dir,
           '--cfg-options', *datagen.tiny_cls_options(data)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = sorted(glob.glob(osp.join(work_dir, '2*')))[-1]
    log = open(glob.glob(osp.join(run_dir, '*.log'))[0]).read()
    assert "align='TransMixLabel'" in log  # the config the run used
    assert 'Epoch(val) [1]' in log and 'accuracy/top1' in log
    scalars = [json.loads(line) for line in open(glob.glob(osp.join(run_dir, 'vis_data',
                                                                     'scalars.json'))[0])]
    fluctuation = [s['token_fluctuation'] for s in scalars if 'token_fluctuation' in s]
    assert fluctuation and all(0 <= f <= 0.5 for f in fluctuation)  # |share - area| <= 1/2
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
