"""TL-Align on ViT/DeiT: the share form against an independent K-dimensional implementation,
exactness of forward/state_dict, the mixer, the classifier and its errors."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmpretrain.structures import DataSample

import mmtlalign  # noqa: F401
from mmtlalign.models import AlignedVisionTransformer, TLAlignClassifier, TLAlignMix

from helpers import make_vit_pair, vit_grid_share
from kdim_reference import K, vit_output_label, vit_output_labels, vit_token_labels

MMLogger.get_current_instance().setLevel(logging.WARNING)


def fractional_share(B, grid, seed):
    """A pixel box that is not aligned to the patch grid, different per image."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, grid[0] * 16, grid[1] * 16)
    for b in range(B):
        y, x = torch.randint(0, 100, (2,), generator=g).tolist()
        mask[b, y:y + 101, x:x + 87] = 1
    return mmtlalign.models.alignment.token_share_from_mask(mask, grid)


@pytest.mark.parametrize('arch', ['deit-tiny', 'deit-small'])
@pytest.mark.parametrize('out_type', ['cls_token', 'avg_featmap'])
@pytest.mark.parametrize('share_kind', ['grid', 'fractional'])
def test_share_matches_k_dim_reference(arch, out_type, share_kind):
    parent, aligned = make_vit_pair(arch, out_type)
    B, grid = 3, (14, 14)
    x = torch.randn(B, 3, 224, 224)
    make = vit_grid_share if share_kind == 'grid' else fractional_share
    token_share = make(B, grid, seed=1)
    labels = torch.tensor([1, 4, 7])
    partner = torch.tensor([2, 0, 1])

    with torch.no_grad():
        outs, share = aligned.forward_aligned(x, token_share)
    ours = mmtlalign.models.alignment.aligned_target(labels, partner, share.double(), K)
    ref = vit_output_labels(parent, x, token_share, labels, partner)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    if share_kind == 'fractional':
        assert ((token_share > 0) & (token_share < 1)).any()
    # the test can fail: the traced share really moved away from the area share
    assert (share - token_share.mean(dim=1)).abs().max() > 2e-3  # 200x the tolerance


def test_forward_and_state_dict_match_parent_exactly():
    parent, aligned = make_vit_pair('deit-tiny', 'cls_token')
    assert list(parent.state_dict()) == list(aligned.state_dict())
    for k, v in parent.state_dict().items():
        assert torch.equal(v, aligned.state_dict()[k])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = parent(x)
        plain = aligned(x)
        traced, _ = aligned.forward_aligned(x, torch.rand(2, 196))
    for r, p, t in zip(ref, plain, traced):
        assert torch.equal(r, p)
        assert torch.equal(r, t)
    # the parent loads the subclass's checkpoint and vice versa (strict)
    parent.load_state_dict(aligned.state_dict())


def test_forward_aligned_train_mode_gradients_and_no_label_gradient():
    _, aligned = make_vit_pair('deit-tiny', 'cls_token')
    aligned.train()
    x = torch.randn(2, 3, 224, 224)
    outs, share = aligned.forward_aligned(x, vit_grid_share(2, (14, 14), 0))
    assert not share.requires_grad  # no gradient flows through labels
    # a fixed random readout: the plain sum of a LayerNorm output (unit weight, zero bias) is
    # constant in its input, so its gradient is 0 up to rounding
    readout = torch.randn(outs[-1].shape, generator=torch.Generator().manual_seed(1))
    (outs[-1] * readout).sum().backward()
    grad = aligned.layers[0].attn.qkv.weight.grad
    assert grad.abs().max() > 1e-4 * readout.abs().max()


def test_attention_dropout_traces_before_dropout():
    """In training with attention dropout, labels follow the pre-dropout attention."""
    torch.manual_seed(0)
    aligned = AlignedVisionTransformer(arch='deit-tiny', img_size=224,
                                       layer_cfgs=dict(attn_drop_rate=0.5))
    aligned.train()
    token_share = vit_grid_share(2, (14, 14), 0)
    x = torch.randn(2, 3, 224, 224)
    labels, partner = torch.tensor([0, 1]), torch.tensor([1, 0])
    inputs = []
    hooks = [layer.attn.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
             for layer in aligned.layers]
    with torch.no_grad():
        _, share = aligned.forward_aligned(x, token_share)
    for h in hooks:
        h.remove()
    # the reference replays the rule on the block inputs of that dropout-perturbed pass
    ref = vit_output_label(aligned, vit_token_labels(aligned, inputs, token_share, labels,
                                                     partner))
    ours = mmtlalign.models.alignment.aligned_target(labels, partner, share.double(), K)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- mixer
def test_grid_cutmix_tokens_come_from_one_image_and_lambda_is_corrected():
    mixer = TLAlignMix(cutmix_alpha=1.0, seed=3)
    x = torch.randn(4, 3, 224, 224)
    for _ in range(5):
        mb = mixer(x, (16, 16))
        assert set(mb.token_share.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(mb.area_share, mb.token_share.mean(dim=1))
        # mixed pixels come from the partner exactly where the token share is 1
        from_partner = mb.token_share.reshape(4, 14, 14).repeat_interleave(16, 1)
        from_partner = from_partner.repeat_interleave(16, 2)[:, None].bool().expand_as(x)
        assert torch.equal(mb.inputs[from_partner], x[mb.partner][from_partner])
        assert torch.equal(mb.inputs[~from_partner], x[~from_partner])
        assert sorted(mb.partner.tolist()) == [0, 1, 2, 3]


def test_patch_size_comes_from_the_backbone_and_pixel_boxes_give_fractions():
    x = torch.randn(2, 3, 64, 64)
    mb = TLAlignMix(seed=0)(x, (8, 8))
    assert mb.token_share.shape == (2, 64)
    fractional = False
    mixer = TLAlignMix(box_grid=1, seed=0)
    for _ in range(10):
        mb = mixer(x, (16, 16))
        assert mb.token_share.shape == (2, 16)
        torch.testing.assert_close(mb.area_share, mb.token_share.mean(dim=1))
        fractional |= bool(((mb.token_share > 0) & (mb.token_share < 1)).any())
    assert fractional


def test_mixup_batch_gets_exactly_the_mixup_target():
    clf = tiny_classifier(mix=dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8,
                                   seed=5))
    inputs, samples = tiny_batch(4)
    labels = torch.cat([s.gt_label for s in samples])
    expected_mix = copy.deepcopy(clf.mixer)(inputs, clf.patch_size)
    assert expected_mix.uniform
    clf.loss(inputs, samples)
    lam_b = expected_mix.area_share[:, None]
    y = F.one_hot(labels, 4).float()
    expected = (1 - lam_b) * y + lam_b * y[expected_mix.partner]
    got = torch.stack([s.gt_score for s in samples])
    assert torch.equal(got, expected)


# ---------------------------------------------------------------- classifier
def tiny_classifier(backbone_type='AlignedVisionTransformer', num_classes=4, **kwargs):
    return TLAlignClassifier(
        backbone=dict(type=backbone_type, arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                                    feedforward_channels=96),
                      img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=num_classes, in_channels=48,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
        **kwargs)


def tiny_batch(B, size=32, num_classes=4):
    inputs = torch.randn(B, 3, size, size)
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(B)]
    return inputs, samples


def test_classifier_loss_logs_fluctuation_and_backpropagates():
    clf = tiny_classifier(mix=dict(type='TLAlignMix', seed=0))
    inputs, samples = tiny_batch(4)
    losses = clf.loss(inputs, samples)
    # the label drift of each block and of the output is logged too (issue 31), never summed
    # into the loss: no key but 'loss' holds 'loss', none needs a gradient
    depth = len(clf.backbone.layers)
    drift = {f'drift/block_{i:02d}' for i in range(1, depth + 1)} | {'drift/final'}
    assert set(losses) == {'loss', 'token_fluctuation'} | drift
    assert not any(v.requires_grad for k, v in losses.items() if k != 'loss')
    assert torch.equal(losses['drift/final'], losses['token_fluctuation'])
    losses['loss'].backward()
    assert clf.backbone.cls_token.grad is not None


def test_batch_of_one_trains():
    clf = tiny_classifier()
    inputs, samples = tiny_batch(1)
    losses = clf.loss(inputs, samples)
    assert torch.isfinite(losses['loss'])
    assert torch.equal(samples[0].gt_score, F.one_hot(torch.tensor(0), 4).float())


def test_num_classes_is_read_from_the_head():
    clf = tiny_classifier(num_classes=7)
    inputs, samples = tiny_batch(4, num_classes=7)
    clf.loss(inputs, samples)
    assert samples[0].gt_score.shape == (7,)


def test_error_image_not_divisible_by_patch():
    clf = tiny_classifier()
    inputs, samples = tiny_batch(2, size=36)
    with pytest.raises(ValueError, match='not divisible by the patch size 8x8'):
        clf.loss(inputs, samples)


def test_error_backbone_without_forward_aligned():
    with pytest.raises(TypeError, match='VisionTransformer has none'):
        tiny_classifier(backbone_type='VisionTransformer')
    tiny_classifier(backbone_type='VisionTransformer', align=False)  # baseline is fine


def test_error_unknown_mixing_mode():
    with pytest.raises(ValueError, match="Unknown TLAlignMix mode 'pairs'"):
        TLAlignMix(mode='pairs')


def test_error_mismatched_num_classes():
    clf = tiny_classifier(num_classes=4)
    inputs, samples = tiny_batch(4, num_classes=6)
    samples[1].set_gt_label(5)
    with pytest.raises(ValueError, match='label 5 is out of range for head.num_classes=4'):
        clf.loss(inputs, samples)
    with pytest.raises(ValueError, match='head.num_classes=4 but head.loss.num_classes=1000'):
        TLAlignClassifier(
            backbone=dict(type='AlignedVisionTransformer', arch='deit-tiny'),
            head=dict(type='VisionTransformerClsHead', num_classes=4, in_channels=192,
                      loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                                num_classes=1000)))


def test_error_double_mixing_with_inherited_batch_augments():
    with pytest.raises(ValueError, match='set `model.train_cfg=None`'):
        tiny_classifier(train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)]))


def test_training_gradients_are_the_parents_bit_for_bit():
    """forward_aligned changes nothing for the features, backward included."""
    parent, aligned = make_vit_pair('deit-tiny', 'cls_token')
    parent.train()
    aligned.train()
    x = torch.randn(2, 3, 224, 224)
    torch.manual_seed(1)
    parent(x)[-1].square().sum().backward()
    torch.manual_seed(1)
    outs, _ = aligned.forward_aligned(x, vit_grid_share(2, (14, 14), 0))
    outs[-1].square().sum().backward()
    for (name, p), a in zip(parent.named_parameters(), aligned.parameters()):
        assert torch.equal(p.grad, a.grad), name
