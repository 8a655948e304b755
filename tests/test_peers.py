"""MixPro, SMMix and TokenMix (../shared/PEERS.md) as mixers and label rules: each against an
independent implementation of the specification written here (loops over cells, windows and
tokens, explicit float64 attention), on sharpened attention so that the rules really differ;
TL-Align on the new masks against the K-dim reference per token; the arms, configs and a real
run of every peer arm through tools/benchmark.py."""
import copy
import glob
import json
import logging
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmtlalign  # noqa: F401
from mmtlalign.errors import UserInputError, UserTypeError
from mmtlalign.models import (
    BlockMaskMix,
    MaskMix,
    PALLabel,
    RandomChoiceMix,
    SMMix,
    SMMixLabel,
    TLAlignMix,
)

import datagen
from helpers import make_vit_pair
from kdim_reference import vit_attention, vit_block_inputs, vit_token_labels

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
MMLogger.get_current_instance().setLevel(logging.WARNING)
PEER_ARMS = ['mixpro', 'maskmix', 'smmix', 'tokenmix', 'tlalign-maskmix', 'tlalign-tokenmix']


# ------------------------------------------------------------------ references from the spec
def ref_maskmix(x, patch, cell, alpha, seed):
    """PEERS.md 1.2: r ~ Beta, n = ceil(G r) own cells per image (the n first of an argsort of
    uniforms), partner a permutation; draws in the order MaskMix documents."""
    rng = np.random.default_rng(seed)
    B, _, H, W = x.shape
    gw, G = W // cell, (H // cell) * (W // cell)
    r = rng.beta(alpha, alpha)
    n = math.ceil(G * r)
    perm = torch.as_tensor(rng.permutation(B))
    order = rng.random((B, G)).argsort(axis=1)
    own = torch.zeros(B, H, W, dtype=torch.float64)
    for b in range(B):
        for c in order[b, :n]:
            i, j = divmod(int(c), gw)
            own[b, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = 1
    mixed = own[:, None] * x.double() + (1 - own[:, None]) * x.double()[perm]
    return mixed, perm, per_token_share(1 - own, patch), 1 - n / G


def per_token_share(partner_pixels, patch):
    """(B, N) mean of a (B, H, W) partner-pixel mask over each patch, loop by loop."""
    B, H, W = partner_pixels.shape
    out = torch.zeros(B, (H // patch) * (W // patch), dtype=torch.float64)
    for t in range(out.shape[1]):
        i, j = divmod(t, W // patch)
        out[:, t] = partner_pixels[:, i * patch:(i + 1) * patch,
                                   j * patch:(j + 1) * patch].mean(dim=(1, 2))
    return out


def ref_block_mask(seed, gh, gw, target):
    """PEERS.md 3.2 (BEiT block masking): add blocks until `target` cells, 10 tries each."""
    rng = np.random.default_rng(seed)
    mask = [[0] * gw for _ in range(gh)]
    count = 0
    while count < target:
        remaining = target - count
        delta = 0
        for _ in range(10):
            area = rng.uniform(1, remaining)
            ar = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            h = int(round(math.sqrt(area * ar)))
            w = int(round(math.sqrt(area / ar)))
            if w < gw and h < gh:
                top = int(rng.integers(0, gh - h + 1))
                left = int(rng.integers(0, gw - w + 1))
                cells = [(i, j) for i in range(top, top + h) for j in range(left, left + w)]
                new = sum(1 for i, j in cells if not mask[i][j])
                if 0 < new <= remaining:
                    for i, j in cells:
                        mask[i][j] = 1
                    delta = new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return torch.tensor(mask, dtype=torch.float64)


def ref_smmix(x, scores, patch, side):
    """PEERS.md 2.2: per image the s x s window (stride 1) with the smallest score sum receives,
    in the same layout, the partner's (B-1-b) window with the largest sum (first on ties)."""
    B, _, H, W = x.shape
    gh, gw = H // patch, W // patch
    s = scores.double().reshape(B, gh, gw)
    best = []
    for b in range(B):
        sums = [(float(s[b, i:i + side, j:j + side].sum()), i, j)
                for i in range(gh - side + 1) for j in range(gw - side + 1)]
        low = min(range(len(sums)), key=lambda k: (sums[k][0], k))
        high = max(range(len(sums)), key=lambda k: (sums[k][0], -k))
        best.append((sums[low][1:], sums[high][1:]))
    mixed = x.double().clone()
    share = torch.zeros(B, gh * gw, dtype=torch.float64)
    for b in range(B):
        p = B - 1 - b
        (ti, tj), (si, sj) = best[b][0], best[p][1]
        mixed[b, :, ti * patch:(ti + side) * patch, tj * patch:(tj + side) * patch] = \
            x.double()[p, :, si * patch:(si + side) * patch, sj * patch:(sj + side) * patch]
        for i in range(side):
            for j in range(side):
                share[b, (ti + i) * gw + tj + j] = 1
    return mixed, share


def explicit_attention(vit, images, block=-1):
    """(B, 1 + N, 1 + N) head-mean softmax attention of one block, float64, from the block's
    own qkv projection applied to its input."""
    return vit_attention(vit.layers[block].attn, vit_block_inputs(vit, images)[block])


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    """Build by name in mmpretrain's scope, as our configs do: an earlier test (mmdet/mmseg
    configs) may have left another default scope current in this process."""
    init_default_scope('mmpretrain')


def sharpen(vit, factor=6.0):
    with torch.no_grad():
        for layer in vit.layers:
            c = layer.attn.embed_dims
            layer.attn.qkv.weight[:2 * c] *= factor
    return vit


def tiny_classifier(align, mix, num_classes=4, seed=0, smoothing=0.1):
    torch.manual_seed(seed)
    clf = MODELS.build(dict(
        type='TLAlignClassifier', align=align, mix=mix,
        backbone=dict(type='AlignedVisionTransformer', arch=dict(
            embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96), img_size=32,
                      patch_size=8),
        # the head initialised like every Linear (mmpretrain's default zeroes it: uniform
        # predictions, under which PAL's alpha and SMMix's consistency would be trivial)
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=48,
                  init_cfg=None, loss=dict(type='LabelSmoothLoss', label_smooth_val=smoothing,
                            mode='original'))))
    clf.init_weights()
    sharpen(clf.backbone, 8.0)
    return clf


def tiny_batch(B, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(B, 3, 32, 32, generator=g)
    labels = torch.randperm(B, generator=g) % num_classes
    return inputs, [DataSample().set_gt_label(int(i)) for i in labels], labels


def smooth(labels, K, eps=0.1):
    return F.one_hot(labels, K).double() * (1 - eps) + eps / K


def soft_ce(logits, target):
    return -(target * logits.double().log_softmax(-1)).sum(-1).mean()


# ------------------------------------------------------------------ mixers against the spec
@pytest.mark.parametrize('size,patch,cell', [(28, 7, 7), (32, 4, 8), (48, 16, 12)])
def test_maskmix_matches_the_spec(size, patch, cell):
    x = torch.randn(6, 2, size, size)
    for seed in range(5):
        mixed = MaskMix(alpha=1.0, cell_size=cell, seed=seed)(x, (patch, patch))
        images, perm, share, area = ref_maskmix(x, patch, cell, 1.0, seed)
        assert mixed.kind == 'maskmix'
        assert torch.equal(mixed.partner, perm)
        torch.testing.assert_close(mixed.inputs.double(), images, atol=1e-6, rtol=0)
        torch.testing.assert_close(mixed.token_share.double(), share, atol=1e-6, rtol=0)
        torch.testing.assert_close(mixed.area_share.double(), torch.full((6,), area,
                                                                         dtype=torch.float64))
    if cell % patch:  # 12-px cells on 16-px tokens: straddling tokens get fractions
        assert ((share > 0) & (share < 1)).any()


def test_maskmix_lambda_is_uniform_on_sixteenths():
    mixer = MaskMix(cell_size=7, seed=0)
    x = torch.randn(4, 1, 28, 28)
    lams = [round(16 * (1 - float(mixer(x, (7, 7)).area_share[0]))) for _ in range(1600)]
    counts = np.bincount(lams, minlength=17)
    assert counts[0] == 0 and counts[1:].min() > 60  # 1/16 .. 16/16, about 100 each
    assert abs(np.mean(lams) / 16 - 17 / 32) < 0.02  # E lambda = 17/32


@pytest.mark.parametrize('grid,min_tokens', [((14, 14), 14), ((4, 4), 1)])
def test_block_mask_matches_the_spec(grid, min_tokens):
    patch = 16 if grid[0] == 14 else 7
    x = torch.randn(4, 1, grid[0] * patch, grid[1] * patch)
    N = grid[0] * grid[1]
    target = min(N, N // 2 + min_tokens)
    for seed in range(10):
        mixed = BlockMaskMix(min_tokens=min_tokens, seed=seed)(x, (patch, patch))
        ref = ref_block_mask(seed, *grid, target).flatten()
        flip = torch.arange(3, -1, -1)
        assert mixed.kind == 'block' and torch.equal(mixed.partner, flip)
        torch.testing.assert_close(mixed.token_share.double(), ref.expand(4, -1))
        torch.testing.assert_close(mixed.area_share.double(), ref.mean().expand(4))
        m = ref.reshape(grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
        want = (1 - m) * x.double() + m * x.double()[flip]
        torch.testing.assert_close(mixed.inputs.double(), want, atol=1e-6, rtol=0)


def test_block_mask_places_112_of_196_tokens_as_the_release():
    # PEERS.md 3.2: 1970 of 2000 released masks have exactly 112 tokens, the rest 108-111
    mixer, x = BlockMaskMix(seed=0), torch.randn(2, 1, 224, 224)
    counts = [int(mixer(x, (16, 16)).token_share[0].sum()) for _ in range(300)]
    assert max(counts) == 112 and min(counts) >= 100
    assert np.mean(np.equal(counts, 112)) > 0.9


def test_smmix_region_move_matches_the_spec():
    B, patch = 6, 8
    x = torch.randn(B, 3, 48, 48)  # 6 x 6 tokens: s in int(1.5)..int(4.5) = 1..4
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(B, 36, generator=g) ** 4  # content-like, no ties
    logits = torch.randn(B, 5, generator=g)
    seen = set()
    for seed in range(12):
        mixer = SMMix(seed=seed)
        mixed = mixer(x, (patch, patch), motivate=lambda images: (logits, scores))
        side = int(np.random.default_rng(seed).integers(1, 5))
        seen.add(side)
        images, share = ref_smmix(x, scores, patch, side)
        assert mixed.kind == 'smmix' and torch.equal(mixed.partner, torch.arange(B - 1, -1, -1))
        torch.testing.assert_close(mixed.inputs.double(), images, atol=0, rtol=0)
        torch.testing.assert_close(mixed.token_share.double(), share)
        torch.testing.assert_close(mixed.area_share.double(),
                                   torch.full((B,), side**2 / 36, dtype=torch.float64))
        assert mixed.aux['motivation_logits'] is logits
    assert seen == {1, 2, 3, 4}


def test_smmix_needs_the_model():
    with pytest.raises(UserInputError, match='TLAlignClassifier'):
        SMMix()(torch.randn(2, 3, 32, 32), (8, 8))


def test_smmix_scores_are_the_attention_patches_receive_from_patches():
    clf = tiny_classifier('SMMixLabel', dict(type='SMMix', seed=0))
    x, _, _ = tiny_batch(4)
    A = explicit_attention(clf.backbone, x)  # (B, 17, 17)
    want = A[:, 1:, 1:].mean(dim=1)  # column mean over the patch queries, patch keys
    logits, scores = clf.motivation_pass(x)
    torch.testing.assert_close(scores.double(), want, atol=1e-6, rtol=0)
    assert want.std(dim=1).min() > 0.2 * want.mean()  # sharp: the windows really differ
    clf.eval()
    torch.testing.assert_close(logits, clf.head(clf.backbone(x)))
    assert clf.training is False  # restored as it was
    clf.train()
    clf.motivation_pass(x)
    assert clf.training and clf.backbone.training


# ------------------------------------------------------------------ label rules against the spec
def pal_reference(clf, mixed, labels, K):
    """PEERS.md 1.3 in the release's own-share form, with autograd through alpha."""
    A = explicit_attention(clf.backbone, mixed.inputs)
    a = A[:, 0, 1:]                                      # class token -> patches
    own = 1 - mixed.token_share.double()
    lam_attn = (own * a).sum(1) / a.sum(1)
    lam_area = 1 - mixed.area_share.double()
    logits = clf.head(clf.backbone(mixed.inputs)).double()
    y_a = F.one_hot(labels, K).double()
    y_b = y_a[mixed.partner]
    t = lam_area[:, None] * smooth(labels, K) + (1 - lam_area[:, None]) * smooth(
        labels[mixed.partner], K)
    p = logits.softmax(1)
    alpha = (t * p).sum(1) / (t.norm(dim=1) * p.norm(dim=1))
    lam = alpha * lam_attn + (1 - alpha) * lam_area
    ce_a = -(y_a * logits.log_softmax(1)).sum(1)
    ce_b = -(y_b * logits.log_softmax(1)).sum(1)
    return (lam * ce_a + (1 - lam) * ce_b).mean(), lam_attn, lam_area, lam


def test_pal_matches_the_release_with_gradient_through_alpha():
    K = 4
    clf = tiny_classifier('PALLabel', dict(type='MaskMix', cell_size=8, seed=3), num_classes=K)
    x, samples, labels = tiny_batch(8, K)
    mixed = copy.deepcopy(clf.mixer)(x, clf.patch_size)
    assert not mixed.uniform
    ref_clf = copy.deepcopy(clf)
    ref_loss, lam_attn, lam_area, lam = pal_reference(ref_clf, mixed, labels, K)
    assert (lam_attn - lam_area).abs().max() > 0.05  # attention far from the area share
    assert (lam - lam_area).abs().max() > 0.01  # and PAL really moves the label

    losses = clf.loss(x, samples)
    torch.testing.assert_close(losses['loss'].double(), ref_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses['token_fluctuation'].double(),
                               (lam - lam_area).abs().mean().detach(), atol=1e-5, rtol=0)
    losses['loss'].backward()
    ref_loss.backward()
    for name in ('head.layers.head.weight', 'backbone.cls_token'):
        got = dict(clf.named_parameters())[name].grad
        want = dict(ref_clf.named_parameters())[name].grad
        torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-3)

    # alpha detached: a different gradient (so the comparison above can fail), same loss
    det = tiny_classifier(dict(type='PALLabel', detach_alpha=True),
                          dict(type='MaskMix', cell_size=8, seed=3), num_classes=K)
    det_loss = det.loss(x, samples)['loss']
    torch.testing.assert_close(det_loss.double(), ref_loss.detach(), atol=1e-5, rtol=0)
    det_loss.backward()
    diff = (det.head.layers.head.weight.grad - clf.head.layers.head.weight.grad).abs().max()
    assert diff > 1e-3


def test_pal_leaves_other_batches_to_the_area_label():
    K = 4
    clf = tiny_classifier('PALLabel', dict(type='TLAlignMix', cutmix_alpha=1.0, seed=1),
                          num_classes=K)
    x, samples, labels = tiny_batch(8, K)
    mixed = copy.deepcopy(clf.mixer)(x, clf.patch_size)
    logits = copy.deepcopy(clf).head(clf.backbone(mixed.inputs))
    losses = clf.loss(x, samples)
    lam = 1 - mixed.area_share.double()[:, None]
    t = lam * smooth(labels, K) + (1 - lam) * smooth(labels[mixed.partner], K)
    torch.testing.assert_close(losses['loss'].double(), soft_ce(logits, t), atol=1e-5, rtol=0)


@pytest.mark.parametrize('backbone,match', [
    (dict(type='AlignedSwinTransformer', arch='tiny'), 'no class-token output'),
    (dict(type='AlignedVisionTransformer', arch='deit-tiny', img_size=32, patch_size=8,
          with_cls_token=False, out_type='avg_featmap'), 'no class-token output'),
])
def test_pal_refuses_models_without_a_class_token(backbone, match):
    with pytest.raises(UserTypeError, match=match) as e:
        MODELS.build(dict(type='TLAlignClassifier', align='PALLabel', backbone=backbone,
                          mix=dict(type='MaskMix', cell_size=8),
                          head=dict(type='LinearClsHead', num_classes=4, in_channels=768)))
    assert '\n' not in str(e.value)


def test_smmix_losses_match_the_release():
    K, B = 4, 8
    clf = tiny_classifier('SMMixLabel', dict(type='SMMix', seed=5), num_classes=K)
    x, samples, labels = tiny_batch(B, K)
    ref = copy.deepcopy(clf)
    # the motivation pass: eval mode, no gradient, unmixed batch (explicit attention here)
    ref.eval()
    with torch.no_grad():
        z0 = ref.head(ref.backbone(x)).double()
    scores = explicit_attention(ref.backbone, x)[:, 1:, 1:].mean(dim=1)
    side = int(np.random.default_rng(5).integers(1, 4))  # 4 x 4 tokens: s in 1..3
    images, share = ref_smmix(x, scores, 8, side)
    ref.train()
    final = []
    hook = ref.backbone.ln1.register_forward_hook(lambda m, a, o: final.append(o))
    logits = ref.head(ref.backbone(images.float())).double()
    hook.remove()
    tokens = final[-1][:, 1:].double()
    lam = 1 - side**2 / 16
    partner = torch.arange(B - 1, -1, -1)
    l_cls = soft_ce(logits, lam * smooth(labels, K) + (1 - lam) * smooth(labels[partner], K))
    pasted = share.bool()
    u_t = torch.stack([tokens[b][~pasted[b]].mean(0) for b in range(B)])
    u_s = torch.stack([tokens[b][pasted[b]].mean(0) for b in range(B)])
    head = ref.token_head.double()
    l_fine = 0.5 * (soft_ce(head(u_t), smooth(labels, K)) +
                    soft_ce(head(u_s), smooth(labels[partner], K)))
    p_star = (lam * z0 + (1 - lam) * z0[partner]).softmax(1)
    l_con = (p_star * (p_star.log() - logits.log_softmax(1))).sum(1).mean()

    losses = clf.loss(x, samples)
    # the class token's loss is one part of three: 'loss_cls' (parse_losses logs the sum)
    assert set(losses) >= {'loss_cls', 'loss_fine', 'loss_consistency'}
    torch.testing.assert_close(losses['loss_cls'].double(), l_cls, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses['loss_fine'].double(), l_fine, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses['loss_consistency'].double(), l_con, atol=1e-5, rtol=0)
    assert l_con > 1e-3 and l_fine > 1e-3
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert clf.token_head.weight.grad.abs().sum() > 0
    assert clf.backbone.cls_token.grad.abs().sum() > 0


def test_smmix_mixup_batches_add_zero_terms_that_touch_the_token_head():
    clf = tiny_classifier('SMMixLabel', dict(
        type='RandomChoiceMix', seed=0, probs=[0.0, 1.0],
        mixers=[dict(type='SMMix'), dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8,
                                         pairing='flip')]))
    x, samples, _ = tiny_batch(4)
    losses = clf.loss(x, samples)
    assert float(losses['loss_fine']) == 0 and float(losses['loss_consistency']) == 0
    (losses['loss_cls'] + losses['loss_fine']).backward()
    assert clf.token_head.weight.grad is not None


def test_smmix_refuses_swin_in_one_line():
    with pytest.raises(UserTypeError, match='not a VisionTransformer') as e:
        MODELS.build(dict(type='TLAlignClassifier', align='SMMixLabel', mix=dict(type='SMMix'),
                          backbone=dict(type='AlignedSwinTransformer', arch='tiny'),
                          head=dict(type='LinearClsHead', num_classes=4, in_channels=768)))
    assert '\n' not in str(e.value)


# ------------------------------------------------------------------ TL-Align on the new masks
@pytest.mark.parametrize('mixer', [MaskMix(cell_size=56, seed=1), BlockMaskMix(seed=2)],
                         ids=['maskmix', 'block'])
def test_tlalign_on_the_new_masks_matches_the_k_dim_reference_per_token(mixer):
    parent, aligned = make_vit_pair('deit-tiny', 'cls_token')
    x = torch.randn(4, 3, 224, 224)
    labels = torch.tensor([1, 4, 7, 9])
    mixed = mixer(x, (16, 16))
    with torch.no_grad():
        _, share, _, traced = aligned.forward_aligned(mixed.inputs, mixed.token_share,
                                                      dense=True)
    Y = vit_token_labels(parent, vit_block_inputs(parent, mixed.inputs), mixed.token_share,
                         labels, mixed.partner)
    y_a = F.one_hot(labels, 10).double()
    y_b = y_a[mixed.partner]
    t = traced.double()[..., None]
    got = (1 - t) * y_a[:, None] + t * y_b[:, None]
    mixed_images = mixed.partner != torch.arange(4)
    err = (got - Y[:, 1:]).abs()[mixed_images].max()
    assert err < 1e-5, err
    out = (1 - share.double()[:, None]) * y_a + share.double()[:, None] * y_b
    torch.testing.assert_close(out, Y[:, 0], atol=1e-5, rtol=0)
    # the rule moved the labels: traced shares are not the starting ones
    assert (traced - mixed.token_share).abs().max() > 0.05
    if isinstance(mixer, MaskMix):  # 56-px cells on 16-px tokens: fractional tokens
        assert ((mixed.token_share > 0) & (mixed.token_share < 1)).any()


# ------------------------------------------------------------------ alternation and resume
def test_random_choice_mix_draws_from_one_saved_generator():
    mixer = RandomChoiceMix([dict(type='MaskMix', cell_size=8), dict(type='BlockMaskMix'),
                             dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8)],
                            probs=[0.5, 0.25, 0.25], seed=0)
    x = torch.randn(4, 3, 32, 32)
    kinds = [mixer(x, (8, 8)).kind for _ in range(400)]
    assert abs(kinds.count('maskmix') / 400 - 0.5) < 0.08
    assert abs(kinds.count('block') / 400 - 0.25) < 0.07
    state = copy.deepcopy(mixer.state_dict())
    first = [mixer(x, (8, 8)).inputs for _ in range(5)]
    other = RandomChoiceMix([dict(type='MaskMix', cell_size=8), dict(type='BlockMaskMix'),
                             dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8)],
                            probs=[0.5, 0.25, 0.25], seed=123)
    other.load_state_dict(state)
    for a in first:
        assert torch.equal(a, other(x, (8, 8)).inputs)
    with pytest.raises(UserInputError, match='summing to 1'):
        RandomChoiceMix([dict(type='MaskMix')], probs=[0.5])


@pytest.mark.parametrize('mixer,match', [
    (MaskMix(cell_size=10), 'cell size 10x10 px does not divide'),
    (BlockMaskMix(cell_size=10), 'cell size 10x10 px does not divide'),
])
def test_bad_cell_size_is_one_line(mixer, match):
    with pytest.raises(UserInputError, match=match) as e:
        mixer(torch.randn(2, 3, 32, 32), (8, 8))
    assert '\n' not in str(e.value)


# ------------------------------------------------------------------ arms and configs
def build(path):
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return cfg, MODELS.build(cfg.model)


def test_demo_arms_share_the_recipe_and_the_initial_weights():
    def load(name):
        cfg = Config.fromfile(osp.join(DEMO, f'fmnist_vit_{name}.py')).to_dict()
        model = cfg.pop('model')
        return cfg, model.pop('align'), model.pop('mix'), model

    base_cfg, _, _, base_model = load('cutmix')
    rules = {}
    for arm in PEER_ARMS:
        cfg, rules[arm], _, model = load(arm)
        assert cfg == base_cfg and model == base_model, arm  # only align and mix differ
    assert rules == {'mixpro': 'PALLabel', 'maskmix': False, 'smmix': 'SMMixLabel',
                     'tokenmix': False, 'tlalign-maskmix': True, 'tlalign-tokenmix': True}

    def weights(arm):
        torch.manual_seed(0)
        _, model = build(osp.join(DEMO, f'fmnist_vit_{arm}.py'))
        model.init_weights()
        return {k: v for k, v in model.state_dict().items() if not k.startswith('token_head')}

    ref = weights('cutmix')
    for arm in ('smmix', 'mixpro', 'tlalign-tokenmix'):
        got = weights(arm)
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), arm


@pytest.mark.parametrize('name', [
    'configs/tlalign/deit-s_8xb128_mixpro.py', 'configs/tlalign/deit-s_8xb128_smmix.py',
    'configs/tlalign/deit-s_8xb128_tlalign-tokenmix.py',
    'configs/tlalign/swin-t_16xb64_tlalign-maskmix.py',
    'configs/peers/mixpro_deit-s-p14_8xb128_in1k_pal.py',
    'configs/peers/smmix_deit-s_4xb256_in1k.py', 'configs/peers/tokenmix_deit-s_8xb128_in1k.py'])
def test_imagenet_configs_build(name):
    cfg, model = build(osp.join(ROOT, name))
    assert type(model).__name__ == 'TLAlignClassifier'
    if 'p14' in name:
        assert model.patch_size == (14, 14) and cfg.auto_scale_lr.enable is False
        assert type(model.label_rule) is PALLabel and type(model.mixer) is RandomChoiceMix
    if 'peers/smmix' in name:
        assert type(model.label_rule) is SMMixLabel and cfg.train_dataloader.batch_size == 256
        assert 'RandomErasing' not in [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        assert [type(m) for m in model.mixer.mixers] == [SMMix, TLAlignMix]
    if 'peers/tokenmix' in name:
        assert cfg.train_cfg.max_epochs == 310
        assert 'EMAHook' in [h['type'] for h in cfg.custom_hooks]


def test_suites_name_the_peer_arms():
    from mmtlalign.benchmark.suite import load_suite
    assert [a.name for a in load_suite('fmnist').arms][-6:] == PEER_ARMS
    assert [a.name for a in load_suite('imagenet_deit-s').arms][-6:] == PEER_ARMS
    assert [a.name for a in load_suite('imagenet_swin-t').arms][-4:] == [
        'maskmix', 'tokenmix', 'tlalign-maskmix', 'tlalign-tokenmix']
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import demo
    finally:
        sys.path.pop(0)
    # opt-in: the main job (the canvas suite) and the fast suite run none of them by default
    assert demo.parse_args([]).arms == ['cutmix', 'tlalign']
    assert demo.parse_args(['--suite', 'fmnist']).arms == ['cutmix', 'tlalign', 'transmix']
    assert demo.parse_args(['--suite', 'fmnist', '--arms', *PEER_ARMS]).arms == PEER_ARMS


@pytest.mark.e2e
@pytest.mark.slow
def test_every_peer_arm_trains_through_tools_benchmark(tmp_path):
    """The peer arms with their own label rules or losses (PAL, SMMix, TL-Align on block
    masks; the area-label arms only swap the mixer, built above), one seed, one epoch on tiny
    Fashion-MNIST files, through the real benchmark runner and mmengine Runner."""
    arms_run = ['mixpro', 'smmix', 'tlalign-tokenmix']
    src, root = str(tmp_path / 'src'), str(tmp_path / 'fmnist')
    datagen.write_fmnist(src, n_train=64, n_test=32, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    options = {f'{loader}.dataset.data_root': root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_dataloader.dataset.indices': None, 'val_dataloader.dataset.indices':
                    None, 'train_dataloader.batch_size': 16, 'val_dataloader.batch_size': 32,
                    'train_cfg.max_epochs': 1})
    arms = ',\n'.join(f"    dict(name={arm!r}, config={osp.join(DEMO, f'fmnist_vit_{arm}.py')!r})"
                       for arm in arms_run)
    suite = tmp_path / 'peers.py'
    suite.write_text(f'seeds = [0]\narms = [\n{arms}\n]\ncfg_options = {options!r}\n')
    work = str(tmp_path / 'work')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'), str(suite), '--work-dir',
         work], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for arm in arms_run:
        scalars = glob.glob(osp.join(work, arm, 'seed0', '2*', 'vis_data', 'scalars.json'))
        assert scalars, arm
        rows = [json.loads(line) for line in open(scalars[0]) if line.strip()]
        assert any('accuracy/top1' in r for r in rows), arm
        if arm == 'smmix':
            assert any('loss_fine' in r and 'loss_consistency' in r for r in rows)
        if arm == 'mixpro':  # PAL moves the label away from the area share
            assert any(r.get('token_fluctuation', 0) > 0 for r in rows)
