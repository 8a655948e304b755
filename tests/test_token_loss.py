"""Dense token labels (``TLAlignClassifier(token_loss=...)``, issue 21).

* every output token's traced target of ViT and Swin (shifts, window padding, odd patch
  merging) against an independent K-dimensional implementation of DESIGN.md's rule, and the
  tokens against the parent's own forward;
* the loss against a hand computation (label smoothing included), the class-token loss
  unchanged, uniform (Mixup) batches, 'elem' mode, AMP (bf16 on CPU);
* gradients from the token loss alone reach the token head and the backbone;
* one-line errors; the token head leaves every other weight's initialisation alone;
* configs change only ``model.token_loss``; (slow) compile, a real tools/train.py run with
  resume, and the downstream chain (cls_to_backbone + ADE20K UperNet) on tiny data.
"""
import copy
import glob
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmpretrain.models import SwinTransformer, VisionTransformer
from mmpretrain.structures import DataSample

import mmtlalign  # noqa: F401
from mmtlalign.errors import UserInputError, UserTypeError
from mmtlalign.models import AlignedSwinTransformer, AlignedVisionTransformer, TLAlignClassifier
from mmtlalign.models.alignment import token_share_from_mask
from mmtlalign.models.token_loss import token_targets

import datagen
from helpers import PY, ROOT, free_port, ok, run_tool
from kdim_reference import (
    K,
    swin_token_labels,
    swin_window_attention,
    vit_block_inputs,
    vit_output_label,
    vit_token_labels,
)

TOL = 1e-5

MMLogger.get_current_instance().setLevel(logging.WARNING)


# ---- ViT: every token against the K-dimensional reference (kdim_reference.py) --------------
def vit_pair(out_type, seed=0):
    """mmpretrain's DeiT-T and the aligned subclass with the same, sharpened weights (attention
    far from uniform, so a wrong rule cannot pass by staying near the area share)."""
    torch.manual_seed(seed)
    kwargs = dict(arch='deit-tiny', img_size=224, patch_size=16, out_type=out_type)
    parent = VisionTransformer(**kwargs)
    parent.init_weights()
    with torch.no_grad():
        for layer in parent.layers:
            layer.attn.qkv.weight[:2 * layer.attn.embed_dims] *= 6.0
    aligned = AlignedVisionTransformer(**kwargs)
    aligned.load_state_dict(parent.state_dict())
    parent.eval()
    aligned.eval()
    return parent, aligned


def vit_parent_tokens(parent, x):
    """The parent's output patch tokens, (B, N, C) (final norm; for avg_featmap also ln2), and
    its outs."""
    final = []
    hook = parent.ln1.register_forward_hook(lambda m, a, o: final.append(o))
    with torch.no_grad():
        outs = parent(x)
        tokens = final[-1][:, 1:]
        if parent.out_type == 'avg_featmap':
            tokens = parent.ln2(tokens)
    hook.remove()
    return tokens, outs


def grid_share(B, grid, seed, box=(slice(2, 9), slice(3, 11))):
    g = torch.Generator().manual_seed(seed)
    share = torch.zeros(B, *grid)
    share[(slice(None), *box)] = 1
    return share.flatten(1)[torch.randperm(B, generator=g)]


def fractional_share(B, grid, patch, seed):
    """A pixel box not aligned to the patches, different per image: fractional shares."""
    g = torch.Generator().manual_seed(seed)
    H, W = grid[0] * patch, grid[1] * patch
    mask = torch.zeros(B, H, W)
    for b in range(B):
        y, x = torch.randint(0, H // 2, (2,), generator=g).tolist()
        mask[b, y:y + H // 2 + 5, x:x + W // 3 + 3] = 1
    return token_share_from_mask(mask, grid)


@pytest.mark.parametrize('out_type', ['cls_token', 'avg_featmap'])
@pytest.mark.parametrize('share_kind', ['grid', 'fractional'])
def test_vit_every_token_target_matches_k_dim_reference(out_type, share_kind):
    parent, aligned = vit_pair(out_type)
    B, grid = 3, (14, 14)
    x = torch.randn(B, 3, 224, 224)
    token_share = (grid_share(B, grid, 1) if share_kind == 'grid' else
                   fractional_share(B, grid, 16, 1))
    labels, partner = torch.tensor([1, 4, 7]), torch.tensor([2, 0, 1])

    with torch.no_grad():
        outs, share, tokens, traced = aligned.forward_aligned(x, token_share, dense=True)
    ref = vit_token_labels(parent, vit_block_inputs(parent, x), token_share, labels, partner)
    ref_tokens, ref_outs = vit_parent_tokens(parent, x)
    # every patch token's target, and the output's, from the one pass
    ours = token_targets(labels, partner, traced.double(), K)
    assert ours.shape == (B, 196, K)
    torch.testing.assert_close(ours, ref[:, 1:], atol=TOL, rtol=0)
    torch.testing.assert_close(token_targets(labels, partner, share.double()[:, None], K)[:, 0],
                               vit_output_label(parent, ref), atol=TOL, rtol=0)
    # the tokens are the parent's, and the outputs exactly its forward's
    assert torch.equal(tokens, ref_tokens)
    for o, r in zip(outs, ref_outs):
        assert torch.equal(o, r)
    # the test can fail: the tokens' shares really moved away from where they started
    assert (traced - token_share).abs().max() > 2e-2  # 2000x the tolerance
    if share_kind == 'fractional':
        assert ((token_share > 0) & (token_share < 1)).any()


# ---- Swin: every last-stage token against the K-dimensional reference ------------------------
def swin_pair(img_size, seed=0, **kwargs):
    """mmpretrain's Swin-T and the aligned subclass, random relative position biases and
    sharpened q/k so that window attention is far from uniform."""
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
    parent.eval()
    aligned.eval()
    return parent, aligned


# 224: no padding; 192: every stage pads its windows; 200: windows padded and the 25x25 and
# 13x13 maps merged with padding (odd sizes)
@pytest.mark.parametrize('img_size,pad_small_map', [(224, False), (192, True), (200, True)])
def test_swin_every_token_target_matches_k_dim_reference(img_size, pad_small_map):
    parent, aligned = swin_pair(img_size, pad_small_map=pad_small_map)
    B, grid = 2, (img_size // 4, img_size // 4)
    x = torch.randn(B, 3, img_size, img_size)
    token_share = fractional_share(B, grid, 4, seed=1)
    labels, partner = torch.tensor([3, 8]), torch.tensor([1, 0])

    with torch.no_grad():
        outs, share, tokens, traced = aligned.forward_aligned(x, token_share, dense=True)
    attns, ref_outs = swin_window_attention(parent, x)
    ref = swin_token_labels(parent, attns, token_share, grid, labels, partner)
    h, w = ref.shape[1:3]
    assert traced.shape == (B, h * w) and tokens.shape == (B, h * w, 768)
    ours = token_targets(labels, partner, traced.double(), K)
    torch.testing.assert_close(ours, ref.flatten(1, 2), atol=TOL, rtol=0)
    # tokens: the last stage's normed map that the neck pools, row-major
    assert torch.equal(tokens, ref_outs[-1].flatten(2).transpose(1, 2))
    for o, r in zip(outs, ref_outs):
        assert torch.equal(o, r)
    # origin shares: the same reference without attention (r = 0: merging only)
    origin = aligned.origin_token_share(token_share, grid)
    ref0 = swin_token_labels(parent, attns, token_share, grid, labels, partner, r=0.0)
    torch.testing.assert_close(token_targets(labels, partner, origin.double(), K),
                               ref0.flatten(1, 2), atol=TOL, rtol=0)
    # the test can fail: attention moved the tokens' labels away from plain merging
    assert (traced - origin).abs().max() > 2e-2


# ---- the classifier's loss ------------------------------------------------------------------
def tiny_vit_classifier(token_loss, align=True, seed=0, mix=None, num_classes=4):
    torch.manual_seed(seed)
    return TLAlignClassifier(
        backbone=dict(type='AlignedVisionTransformer',
                      arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                feedforward_channels=96),
                      img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=48,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
        mix=mix or dict(type='TLAlignMix', seed=0, box_grid=1),
        align=align, token_loss=token_loss)


def tiny_swin_classifier(token_loss, seed=0, num_classes=4):
    torch.manual_seed(seed)
    return TLAlignClassifier(
        backbone=dict(type='AlignedSwinTransformer',
                      arch=dict(embed_dims=16, depths=[2, 2], num_heads=[2, 2]),
                      img_size=40, window_size=4, pad_small_map=True, out_indices=(1, ),
                      drop_path_rate=0.0),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=32,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
        mix=dict(type='TLAlignMix', seed=0, box_grid=1), token_loss=token_loss)


def tiny_batch(B, size=32, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(B, 3, size, size, generator=g)
    return inputs, [DataSample().set_gt_label(i % num_classes) for i in range(B)]


def loss_and_mixed(clf, inputs, samples):
    """The classifier's losses and, from the same mixer state, the mixed batch it used."""
    state = copy.deepcopy(clf.mixer.state_dict())
    losses = clf.loss(inputs, samples)
    clf.mixer.load_state_dict(state)
    return losses, clf.mixer(inputs, clf.patch_size), state


def hand_token_loss(tokens, weight, bias, labels, partner, share, eps=0.1, beta=0.5):
    """beta x mean over tokens of -sum_k t_k log softmax(W x + b)_k, t the smoothed soft label
    (1 - eps) [(1 - s) y_a + s y_b] + eps / K, written out token by token."""
    B, N, _ = tokens.shape
    Kc = weight.shape[0]
    total = 0.0
    for b in range(B):
        for i in range(N):
            logits = tokens[b, i].double() @ weight.double().T + bias.double()
            t = torch.zeros(Kc, dtype=torch.float64)
            t[labels[b]] += 1 - float(share[b, i])
            t[labels[partner[b]]] += float(share[b, i])
            t = (1 - eps) * t + eps / Kc
            total += -(t * torch.log_softmax(logits, dim=0)).sum()
    return beta * total / (B * N)


@pytest.mark.parametrize('labels,head', [('traced', 'separate'), ('origin', 'shared'),
                                         ('traced', 'shared')])
def test_vit_token_loss_equals_hand_computation(labels, head):
    clf = tiny_vit_classifier(dict(weight=0.5, labels=labels, head=head))
    plain = tiny_vit_classifier(None)
    plain.load_state_dict(clf.state_dict(), strict=False)
    inputs, samples = tiny_batch(4)
    losses, mixed, state = loss_and_mixed(clf, inputs, copy.deepcopy(samples))
    drift = {f'drift/block_{i:02d}' for i in range(1, len(clf.backbone.layers) + 1)}
    assert set(losses) == {'loss_cls', 'loss_token', 'token_fluctuation', 'drift/final'} | drift
    assert not mixed.uniform
    # the class token's loss is exactly that of the model without the token loss
    plain.mixer.load_state_dict(state)
    assert torch.equal(losses['loss_cls'], plain.loss(inputs, copy.deepcopy(samples))['loss'])

    # by hand: the final norm's output tokens (a hook, not the code under test) and shares
    final = []
    hook = clf.backbone.ln1.register_forward_hook(lambda m, a, o: final.append(o))
    with torch.no_grad():
        tracer = clf.backbone.trace_shares(mixed.inputs, mixed.token_share)
    hook.remove()
    share = tracer.history[-1][:, 1:] if labels == 'traced' else mixed.token_share
    fc = clf.token_head if head == 'separate' else clf.head.layers.head
    y = torch.tensor([i % 4 for i in range(4)])
    expected = hand_token_loss(final[-1][:, 1:], fc.weight, fc.bias, y, mixed.partner, share)
    torch.testing.assert_close(losses['loss_token'].double(), expected, atol=1e-6, rtol=1e-6)
    # the test can fail: traced and origin targets differ on this batch
    assert (tracer.history[-1][:, 1:] - mixed.token_share).abs().max() > 1e-3


def test_swin_token_loss_equals_hand_computation():
    """Swin: the last stage's 5x5 tokens (40 px: windows padded, 10x10 -> 5x5 merged) through
    the shared linear head; the tokens skip the pooling neck."""
    clf = tiny_swin_classifier(dict(weight=0.5, labels='traced', head='shared'))
    inputs, samples = tiny_batch(3, size=40)
    losses, mixed, _ = loss_and_mixed(clf, inputs, samples)
    with torch.no_grad():
        tracer = clf.backbone.trace_shares(mixed.inputs, mixed.token_share)
    tokens = tracer.outs[-1].flatten(2).transpose(1, 2)               # (B, 25, 32)
    share = tracer.stage_shares[-1].flatten(1)
    assert tokens.shape == (3, 25, 32)
    y = torch.tensor([i % 4 for i in range(3)])
    expected = hand_token_loss(tokens, clf.head.fc.weight, clf.head.fc.bias, y, mixed.partner,
                               share)
    torch.testing.assert_close(losses['loss_token'].double(), expected, atol=1e-6, rtol=1e-6)
    losses['loss_token'].backward()
    assert clf.backbone.stages[0].blocks[0].attn.w_msa.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('head', ['shared', 'separate'])
def test_gradient_of_the_token_loss_reaches_token_head_and_backbone(head):
    clf = tiny_vit_classifier(dict(weight=0.5, head=head))
    losses = clf.loss(*tiny_batch(4))
    losses['loss_token'].backward()  # the token loss alone
    fc = clf.token_head if head == 'separate' else clf.head.layers.head
    assert fc.weight.grad.abs().sum() > 0
    assert clf.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert clf.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert not losses['token_fluctuation'].requires_grad


def test_uniform_mixup_batch_every_token_keeps_the_area_share():
    """A global Mixup batch is not traced: every token's target is the Mixup target, so
    traced and origin labels give the same loss."""
    mix = dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=1.0, seed=0)
    inputs, samples = tiny_batch(4)
    got = {}
    for labels in ('traced', 'origin'):
        clf = tiny_vit_classifier(dict(labels=labels), mix=mix)
        losses, mixed, _ = loss_and_mixed(clf, inputs, copy.deepcopy(samples))
        assert mixed.uniform
        got[labels] = losses['loss_token']
    torch.testing.assert_close(got['traced'], got['origin'], atol=1e-6, rtol=0)


def test_elem_mode_with_cutmix_and_mixup_trains():
    mix = dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.8, switch_prob=0.5,
               mode='elem', seed=3, box_grid=1)
    clf = tiny_vit_classifier(dict(weight=0.5), mix=mix)
    losses = clf.loss(*tiny_batch(6))
    assert torch.isfinite(losses['loss_token']) and losses['loss_token'] > 0
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert clf.backbone.layers[-1].ffn.layers[0][0].weight.grad.abs().sum() > 0


def test_bf16_autocast_on_cpu():
    clf = tiny_vit_classifier(dict(weight=0.5, head='separate'))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = clf.loss(*tiny_batch(4))
    assert losses['loss_token'].dtype == torch.float32 and torch.isfinite(losses['loss_token'])
    losses['loss_token'].backward()
    assert clf.token_head.weight.grad.abs().sum() > 0


def test_token_head_leaves_the_other_weights_and_random_state_alone():
    """Same seed, with and without a separate token head: same backbone/head weights and the
    same random stream afterwards (same-seed arms stay paired)."""
    a = tiny_vit_classifier(None, seed=5)
    after_a = torch.rand(3)
    b = tiny_vit_classifier(dict(head='separate'), seed=5)
    after_b = torch.rand(3)
    assert torch.equal(after_a, after_b)
    sb = b.state_dict()
    assert set(sb) - set(a.state_dict()) == {'token_head.weight', 'token_head.bias'}
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), k
    assert b.token_head.weight.std().item() == pytest.approx(0.02, rel=0.2)


def one_line(excinfo):
    assert '\n' not in str(excinfo.value)
    return str(excinfo.value)


@pytest.mark.parametrize('token_loss,error,words', [
    ('yes', UserTypeError, 'must be None or a dict'),
    (dict(wieght=0.5), UserInputError, "unknown key(s) ['wieght']"),
    (dict(weight=0), UserInputError, 'weight must be a number > 0'),
    (dict(weight=True), UserInputError, 'weight must be a number > 0'),
    (dict(labels='mixtoken'), UserInputError, "labels must be one of ('traced', 'origin')"),
    (dict(head='aux'), UserInputError, "head must be one of ('shared', 'separate')"),
])
def test_bad_token_loss_values(token_loss, error, words):
    with pytest.raises(error) as e:
        tiny_vit_classifier(token_loss)
    assert words in one_line(e)


def test_refusals():
    # a backbone without per-token output
    with pytest.raises(UserTypeError) as e:
        TLAlignClassifier(
            backbone=dict(type='ResNet', depth=18), neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=512), align=False,
            token_loss=dict(labels='origin'))
    assert 'per-token output' in one_line(e) and 'ResNet' in str(e.value)
    # traced labels need the TL-Align trace
    with pytest.raises(UserInputError) as e:
        tiny_vit_classifier(dict(labels='traced'), align=False)
    assert "align=True, or token_loss.labels='origin'" in one_line(e)
    # origin labels work with area labels (plain CutMix + MixToken-style token labels)
    clf = tiny_vit_classifier(dict(labels='origin'), align=False)
    assert torch.isfinite(clf.loss(*tiny_batch(2))['loss_token'])
    # a ViT whose output is not a classification token
    with pytest.raises(UserInputError) as e:
        TLAlignClassifier(
            backbone=dict(type='AlignedVisionTransformer', arch='deit-tiny', img_size=32,
                          patch_size=8, out_type='featmap'),
            head=dict(type='VisionTransformerClsHead', num_classes=4, in_channels=192),
            token_loss=dict())
    assert "out_type 'cls_token' or 'avg_featmap'" in one_line(e)


def test_transmix_with_origin_token_labels():
    clf = tiny_vit_classifier(dict(labels='origin'), align='TransMixLabel')
    losses = clf.loss(*tiny_batch(4))
    assert torch.isfinite(losses['loss_token'])


# ---- configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize('dense,origin,base', [
    ('deit-s_8xb128_token-labels.py', 'deit-s_8xb128_token-labels_origin.py', 'deit-s_8xb128.py'),
    ('swin-t_16xb64_token-labels.py', 'swin-t_16xb64_token-labels_origin.py', 'swin-t_16xb64.py'),
    ('demo/fmnist_vit_tlalign-dense.py', 'demo/fmnist_vit_origin-dense.py',
     'demo/fmnist_vit_tlalign.py'),
])
def test_configs_change_only_the_token_loss(dense, origin, base):
    def load(name):
        return Config.fromfile(osp.join(ROOT, 'configs', 'tlalign', name)).to_dict()

    traced, origin, ref = load(dense), load(origin), load(base)
    assert traced['model'].pop('token_loss') == dict(weight=0.5, labels='traced', head='shared')
    assert origin['model'].pop('token_loss') == dict(weight=0.5, labels='origin', head='shared')
    assert traced == ref == origin


def test_suites_name_the_dense_arms():
    from mmtlalign.benchmark.suite import load_suite
    for name in ('fmnist', 'imagenet_deit-s', 'imagenet_swin-t'):
        suite = load_suite(name)
        names = [a.name for a in suite.arms]
        assert {'tlalign', 'tlalign-dense', 'origin-dense'} <= set(names), name
        assert ('tlalign-dense', 'tlalign') in suite.comparisons
    import sys
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import demo
    # the default jobs (the canvas main job, the fast suite) leave the dense arms out
    assert demo.parse_args([]).arms == ['cutmix', 'tlalign']
    assert demo.parse_args(['--suite', 'fmnist']).arms == ['cutmix', 'tlalign', 'transmix']
    assert demo.parse_args(['--suite', 'fmnist', '--arms', 'cutmix', 'tlalign', 'tlalign-dense',
                            'origin-dense']).arms[-1] == 'origin-dense'


# ---- slow: compile, a real training run with resume, downstream ------------------------------
def test_dense_aligned_forward_is_one_graph():
    """torch.compile traces the dense forward_aligned (tokens kept through the probe) of a
    ViT as one graph without breaks, as the plain one."""
    import torch._dynamo
    torch._dynamo.reset()
    torch.manual_seed(0)
    backbone = AlignedVisionTransformer(
        arch=dict(embed_dims=16, num_layers=4, num_heads=2, feedforward_channels=16),
        img_size=16, patch_size=8)
    x, share = torch.randn(2, 3, 16, 16), torch.rand(2, 4)
    explanation = torch._dynamo.explain(
        lambda x, s: backbone.forward_aligned(x, s, dense=True))(x, share)
    torch._dynamo.reset()
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), \
        [r.reason[:200] for r in explanation.break_reasons]
    assert backbone._token_probe is None  # reset after the traced call


@pytest.mark.slow
def test_compiled_dense_loss_equals_eager():
    from mmtlalign.engine.compile import compile_model
    eager = tiny_vit_classifier(dict(weight=0.5, head='separate'))
    comp = tiny_vit_classifier(dict(weight=0.5, head='separate'))
    compile_model(comp)
    inputs, samples = tiny_batch(4)
    for _ in range(2):
        le = eager.loss(inputs, copy.deepcopy(samples))
        lc = comp.loss(inputs, copy.deepcopy(samples))
        for k in ('loss_cls', 'loss_token'):
            torch.testing.assert_close(lc[k], le[k], atol=1e-5, rtol=1e-5)
    lc['loss_token'].backward()
    assert comp.token_head.weight.grad.abs().sum() > 0


def scalars(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    rows = []
    for path in files:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


@pytest.fixture(scope='module')
def trained_dense(tmp_path_factory):
    """tools/train.py (real Runner and registries) on the DeiT-S token-labels config at 64 px
    (a 4x4 token grid) on a tiny ImageNet layout, with a separate token head: one epoch, then
    resumed for a second."""
    tmp = tmp_path_factory.mktemp('dense')
    data = datagen.make_imagenet(str(tmp / 'imagenet'), per_class=2)
    config = tmp / 'dense.py'
    base = osp.join(ROOT, 'configs', 'tlalign', 'deit-s_8xb128_token-labels.py')
    config.write_text(datagen.TINY_64PX_PIPELINES + f"""
_base_ = {base!r}
model = dict(token_loss=dict(head='separate'))
randomness = dict(seed=0)
""")
    work = str(tmp / 'work')
    ok(datagen.train_tool(config, work, data))
    out = ok(datagen.train_tool(config, work, data, '--resume',
                                options=('train_cfg.max_epochs=2', 'resume_schedule=config')))
    return dict(work=work, data=data, out=out)


@pytest.mark.slow
def test_train_and_resume_through_tools_train(trained_dense):
    rows = scalars(trained_dense['work'])
    train = [r for r in rows if 'loss_token' in r]
    assert train and all(r['loss_token'] > 0 for r in train)
    assert {r['epoch'] for r in train} == {1, 2}  # the resumed epoch trained with it too
    assert any('accuracy/top1' in r for r in rows)
    ckpt = torch.load(osp.join(trained_dense['work'], 'epoch_2.pth'), map_location='cpu',
                      weights_only=False)
    assert 'token_head.weight' in ckpt['state_dict']


@pytest.mark.slow
def test_dense_backbone_converts_and_fine_tunes_on_ade20k(trained_dense, tmp_path):
    """cls_to_backbone.py drops the token head; the backbone-only checkpoint fine-tunes
    through the ADE20K config of the dense-supervised DeiT-S (UperNet + MultiLevelNeck)."""
    backbone = str(tmp_path / 'backbone.pth')
    ok(run_tool([PY, osp.join(ROOT, 'tools/model_converters/cls_to_backbone.py'),
                 osp.join(trained_dense['work'], 'epoch_2.pth'), backbone]))
    keys = torch.load(backbone, map_location='cpu', weights_only=True)
    keys = keys.get('state_dict', keys)
    assert not any('token_head' in k for k in keys)
    ade = datagen.make_ade20k(str(tmp_path / 'ADEChallengeData2016'))
    base = osp.join(ROOT, 'configs', 'tlalign', 'ade20k',
                    'upernet_tlalign-deit-s-token-labels_mln_8xb2-160k_ade20k-512x512.py')
    config = tmp_path / 'seg.py'
    config.write_text(datagen.SEG_TINY.format(base=base, data_root=ade, ckpt=backbone,
                                              prefix=None))
    work = str(tmp_path / 'seg')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), str(config), '--work-dir', work]))
    assert 'missing: none, unexpected: none' in out
    assert [r for r in scalars(work) if 'mIoU' in r]


@pytest.mark.slow
def test_ddp_two_processes_train_with_the_token_loss(trained_dense, tmp_path):
    """tools/dist_train.sh, 2 CPU processes (gloo): every parameter, the separate token head
    included, gets gradient every step, so DDP runs without find_unused_parameters."""
    work = str(tmp_path / 'ddp')
    config = osp.join(osp.dirname(trained_dense['work']), 'dense.py')
    result = run_tool(['bash', osp.join(ROOT, 'tools/dist_train.sh'), config, '2',
                       '--work-dir', work, '--cfg-options',
                       *datagen.tiny_cls_options(trained_dense['data'], batch_size=2)],
                      env={'PORT': free_port()})
    ok(result)
    dumped = open(osp.join(work, 'dense.py')).read().replace(' ', '')
    assert 'find_unused_parameters=False' in dumped and "backend='gloo'" in dumped
    rows = [r for r in scalars(work) if 'loss_token' in r]
    assert rows and all(r['loss_token'] > 0 for r in rows)
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
