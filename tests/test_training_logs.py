"""What a TL-Align run logs: ``loss`` is the total optimised (its parts ``loss_cls`` and
``loss_token``), the label drift per block comes from the training pass itself, and
``ShareMapHook`` draws the mixed images with their traced share maps to the visualizer."""
import copy
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmpretrain.structures import DataSample

import mmtlalign  # noqa: F401  (registers the components)
from mmtlalign.engine.share_maps import ShareMapHook, draw_share_maps
from mmtlalign.errors import UserInputError
from mmtlalign.models import TLAlignClassifier
from mmtlalign.models.mixing import TLAlignMix

import datagen
from helpers import assert_png

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')


def tiny_classifier(num_layers=3, token_loss=None, align=True, log_drift=True, seed=0):
    torch.manual_seed(seed)
    return TLAlignClassifier(
        backbone=dict(type='AlignedVisionTransformer',
                      arch=dict(embed_dims=32, num_layers=num_layers, num_heads=2,
                                feedforward_channels=64),
                      img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=4, in_channels=32,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
        mix=dict(type='TLAlignMix', seed=0, box_grid=1), align=align, token_loss=token_loss,
        log_drift=log_drift)


def sharpen(clf, factor=6.0):
    """Scale the q/k projections so that attention is far from uniform (at initialisation
    it is nearly uniform, and labels barely drift)."""
    with torch.no_grad():
        for layer in clf.backbone.layers:
            layer.attn.qkv.weight[:2 * layer.attn.embed_dims] *= factor
    return clf


def tiny_batch(B=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, 32, 32, generator=gen),
            [DataSample().set_gt_label(i % 4) for i in range(B)])


# ------------------------------------------------------------------------------- the loss
def test_logged_loss_is_the_total_optimised_with_token_loss():
    clf = tiny_classifier(token_loss=dict(weight=0.5))
    inputs, samples = tiny_batch()
    losses = clf.loss(inputs, samples)
    assert 'loss' not in losses and {'loss_cls', 'loss_token'} <= set(losses)
    total, log_vars = clf.parse_losses(losses)  # mmengine's, as the Runner's train_step
    log_vars = {k: v.item() for k, v in log_vars.items()}  # as the message hub logs them
    torch.testing.assert_close(total, losses['loss_cls'] + losses['loss_token'])
    assert log_vars['loss'] == pytest.approx(total.item())
    assert log_vars['loss'] > log_vars['loss_cls'] > 0 and log_vars['loss_token'] > 0
    # the drift scalars are logged but not optimised (no 'loss' in their names)
    assert log_vars['drift/final'] == pytest.approx(log_vars['token_fluctuation'])
    assert sum(v for k, v in losses.items() if 'drift' in k) > 0
    # why the head's key had to be renamed: with a part named 'loss', parse_losses logs that
    # part as 'loss' (its OrderedDict keeps the first position, the last value)
    _, trap = clf.parse_losses({'loss': losses['loss_cls'], 'loss_token': losses['loss_token']})
    assert trap['loss'].item() == pytest.approx(losses['loss_cls'].item())


def test_without_token_loss_the_head_loss_keeps_its_upstream_name():
    clf = tiny_classifier()
    losses = clf.loss(*tiny_batch())
    assert 'loss' in losses and not any(k.startswith('loss_') for k in losses)


# ------------------------------------------------------------------------------- the drift
class ForwardCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_drift_per_block_is_read_from_the_training_pass():
    clf = sharpen(tiny_classifier(num_layers=3))
    inputs, samples = tiny_batch()
    state = copy.deepcopy(clf.mixer.state_dict())
    counter = ForwardCounter(clf.backbone.patch_embed)
    losses = clf.loss(inputs, samples)
    assert counter.calls == 1  # the one training forward: the drift costs no extra pass
    keys = [f'drift/block_{i:02d}' for i in (1, 2, 3)]
    assert [k for k in losses if k.startswith('drift/')] == keys + ['drift/final']

    # the same numbers, traced again from the same mixed batch (the code under test is the
    # classifier's bookkeeping; the trace itself is the backbone's own)
    mixer = TLAlignMix(seed=0, box_grid=1)
    mixer.load_state_dict(state)
    mixed = mixer(inputs, clf.patch_size)
    with torch.no_grad():
        tracer = clf.backbone.trace_shares(mixed.inputs, mixed.token_share)
    blocks = clf.backbone.block_output_shares(tracer)  # (3, B)
    expected = (blocks - mixed.area_share).abs().mean(dim=1)
    got = torch.stack([losses[k] for k in keys])
    torch.testing.assert_close(got, expected)
    assert got.min() > 1e-3  # the test can fail: the label drifted on this batch
    assert losses['drift/final'] == pytest.approx(losses['token_fluctuation'].item())
    assert not any(losses[k].requires_grad for k in keys)


def test_uniform_batches_log_zero_drift_and_untraced_rules_log_none():
    clf = tiny_classifier(num_layers=2)
    inputs, samples = tiny_batch()
    clf.loss(inputs, copy.deepcopy(samples))
    clf.mixer = TLAlignMix(cutmix_alpha=0.0, mixup_alpha=1.0, seed=0)  # uniform shares
    losses = clf.loss(inputs, copy.deepcopy(samples))
    assert [losses[f'drift/block_{i:02d}'].item() for i in (1, 2)] == [0.0, 0.0]
    for kwargs in (dict(align=False), dict(align='TransMixLabel'), dict(log_drift=False)):
        losses = tiny_classifier(**kwargs).loss(inputs, copy.deepcopy(samples))
        assert not any(k.startswith('drift/') for k in losses), kwargs


# ------------------------------------------------------------------------------- the hook
def test_share_map_grid_is_drawn_from_the_kept_step(tmp_path):
    clf = tiny_classifier(num_layers=3)
    inputs, samples = tiny_batch()
    clf.keep_mix = True
    clf.loss(inputs, samples)
    record = clf.last_mix
    assert len(record['maps']) == 3 and record['maps'][0].shape == (6, 4, 4)
    images = np.random.default_rng(0).random((6, 32, 32, 3))
    image = draw_share_maps(record, images, num_images=3, classes=['a', 'b', 'c', 'd'])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 400 and image.shape[1] > 800
    with pytest.raises(UserInputError, match='blocks \\[7\\] out of range'):
        draw_share_maps(record, images, num_images=3, blocks=[7])
    # a rule that does not trace (the CutMix arm): the mix and the rule's target only
    area = tiny_classifier(num_layers=3, align=False)
    area.keep_mix = True
    area.loss(inputs, samples)
    assert area.last_mix['maps'] is None
    narrow = draw_share_maps(area.last_mix, images, num_images=3)
    assert narrow.shape[1] < image.shape[1] and narrow.shape[0] > 400


def test_share_map_hook_refuses_other_models_in_one_line():
    class Runner:
        model = torch.nn.Linear(2, 2)
        iter = 0
    with pytest.raises(UserInputError, match='TLAlignClassifier.*remove the hook'):
        ShareMapHook(interval=1).before_train_iter(Runner(), 0)
    with pytest.raises(UserInputError, match='interval'):
        ShareMapHook(interval=0)
    assert isinstance(ShareMapHook(), Hook)


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def dense_run(tmp_path_factory):
    """tools/train.py (real Runner, registries, LoggerHook, visualizer backends) on the main
    job's TL-Align + token labels demo config, on tiny Fashion-MNIST files: 6 iterations,
    logged every iteration, with TensorBoard, the share maps every 3 iterations."""
    pytest.importorskip('tensorboard')
    tmp = tmp_path_factory.mktemp('dense_logs')
    src, root = str(tmp / 'src'), str(tmp / 'fmnist')
    datagen.write_fmnist(src, n_train=48, n_test=16, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    work = str(tmp / 'work')
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += ['train_dataloader.dataset.indices=None', 'val_dataloader.dataset.indices=None',
                'test_dataloader.dataset.indices=None', 'train_dataloader.batch_size=8',
                'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
                'param_scheduler.0.end=0.2', 'param_scheduler.1.begin=0.2',
                'custom_hooks.3.interval=3']
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(DEMO, 'fmnist_vit_tlalign-dense.py'), '--work-dir', work, '--tensorboard',
         '--cfg-options', *options], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def scalars(work):
    path, = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_run_logs_the_total_loss_and_the_drift_per_block(dense_run):
    rows = [r for r in scalars(dense_run) if 'loss_token' in r]
    assert len(rows) == 6  # every iteration (logger interval 1)
    for r in rows:
        assert r['loss'] == pytest.approx(r['loss_cls'] + r['loss_token'], abs=2e-4)
        assert [k for k in r if k.startswith('drift/')] == \
            [f'drift/block_{i:02d}' for i in range(1, 7)] + ['drift/final']
        assert r['drift/final'] == pytest.approx(r['token_fluctuation'], abs=1e-4)
    assert max(r['drift/block_06'] for r in rows) > 0
    log, = glob.glob(osp.join(dense_run, '*', '*.log'))
    assert 'drift/block_01: ' in open(log).read()  # the text log too

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events, = glob.glob(osp.join(dense_run, '*', 'vis_data', 'events.out.tfevents.*'))
    acc = EventAccumulator(events, size_guidance={'images': 0})
    acc.Reload()
    for tag in ('loss', 'loss_cls', 'loss_token', 'drift/block_01', 'drift/final'):
        assert len(acc.Scalars(tag)) == 6, tag
    assert [e.step for e in acc.Images('share_maps')] == [3, 6]


@pytest.mark.slow
def test_run_writes_the_share_map_grid(dense_run):
    pngs = sorted(glob.glob(osp.join(dense_run, '*', 'vis_data', 'vis_image',
                                     'share_maps_*.png')))
    assert [osp.basename(p) for p in pngs] == ['share_maps_3.png', 'share_maps_6.png']
    assert_png(pngs[0], min_size=(800, 500))
