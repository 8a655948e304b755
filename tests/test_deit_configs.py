"""The DeiT recipes (issue 12): every knob of the released TL-Align training, DeiT's own recipe for
the paper's baseline rows, the released pairing, and tiny end-to-end runs of the real configs.

Released values are those of the official TL-Align code (main_tla.py defaults, the
train_deit_small_tla.sh command, timm 0.3.2); DeiT's own recipe is the same script with DeiT's
defaults for Mixup (0.8 + CutMix 1.0) and EMA (decay 0.99996).
"""
import collections
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmtlalign  # noqa: F401
from mmtlalign.models.mixing import MixedBatch, TLAlignMix, flip_partners

import datagen
from helpers import free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
DEIT = {'t': ('deit-tiny', 192), 's': ('deit-small', 384), 'b': ('deit-base', 768)}
KINDS = ('', '_cutmix', '_deit')  # TL-Align, its same-recipe baseline, DeiT's own recipe
CONFIGS = [(size, kind) for size in DEIT for kind in KINDS]

# timm's ImageNet normalisation, in 0-255 RGB
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def load(name):
    return Config.fromfile(osp.join(ROOT, 'configs/tlalign', name))


def deit(size, kind):
    return load(f'deit-{size}_8xb128{kind}.py')


def released_lr(epoch, lr=1e-3, warmup_lr=1e-6, min_lr=1e-5, warmup=5, epochs=300):
    """timm 0.3.2's CosineLRScheduler as DeiT's main.py steps it: the lr of epoch ``epoch``
    is the scheduler's value at ``epoch - 1`` (``lr_scheduler.step(epoch)`` after each epoch)."""
    t = max(epoch - 1, 0)
    if t < warmup:
        return warmup_lr + t * (lr - warmup_lr) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / epochs))


def lr_per_iteration(cfg, epoch_length):
    """(epochs, epoch_length) lr of every training iteration, from the config's schedulers
    built as mmengine's Runner builds them (default end = max_epochs)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    param = torch.nn.Parameter(torch.zeros(1))
    optim = OptimWrapper(torch.optim.AdamW([param], lr=cfg.optim_wrapper.optimizer.lr))
    epochs = cfg.train_cfg.max_epochs
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, end=s.get('end', epochs)),
                               default_args=dict(optimizer=optim, epoch_length=epoch_length))
        for s in cfg.param_scheduler]
    assert all(not s.by_epoch for s in schedulers)  # stepped every iteration
    lrs = []
    for _ in range(epochs * epoch_length):
        lrs.append(optim.param_groups[0]['lr'])
        for scheduler in schedulers:
            scheduler.step()
    return np.array(lrs).reshape(epochs, epoch_length)


def differences(a, b, prefix=''):
    """Dotted paths where two plain config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += differences(a.get(key, '<missing>'), b.get(key, '<missing>'),
                               f'{prefix}{key}.')
        return out
    return [] if a == b else [prefix.rstrip('.')]


# ------------------------------------------------------------------------------ the nine configs
@pytest.mark.parametrize('size,kind', CONFIGS)
def test_deit_config_carries_the_released_knobs(size, kind):
    from mmpretrain.registry import DATA_SAMPLERS
    cfg = deit(size, kind)
    model = cfg.model
    assert cfg.default_scope == 'mmpretrain'

    # model: DeiT-{T,S,B}/16 at 224, drop path 0.1, no dropout, the aligned backbone everywhere
    assert model.type == 'TLAlignClassifier'
    assert model.align is (kind == '')
    backbone = model.backbone
    assert backbone.type == 'AlignedVisionTransformer'
    assert backbone.get('residual_weight', 0.5) == 0.5  # the paper's r (the default)
    assert (backbone.arch, model.head.in_channels) == DEIT[size]
    assert (backbone.img_size, backbone.patch_size) == (224, 16)
    assert backbone.drop_path_rate == 0.1
    assert backbone.get('drop_rate', 0.0) == 0.0
    assert model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert model.head.init_cfg is None  # TruncNormal 0.02 from the classifier, as timm
    assert model.train_cfg is None  # no mmpretrain batch augments on top of the mixer
    assert cfg.data_preprocessor.to_rgb  # images are decoded BGR, the model sees RGB
    assert cfg.data_preprocessor.mean == pytest.approx(MEAN)
    assert cfg.data_preprocessor.std == pytest.approx(STD)

    # mixing: every batch, one box/lambda per batch, image i with image B-1-i
    mix = model.mix
    assert mix.type == 'TLAlignMix' and mix.pairing == 'flip'
    assert mix.prob == 1.0 and mix.mode == 'batch'
    if kind == '_deit':  # timm's Mixup: Mixup 0.8 or pixel CutMix 1.0, switch 0.5
        assert (mix.mixup_alpha, mix.cutmix_alpha, mix.switch_prob) == (0.8, 1.0, 0.5)
        assert mix.box_grid == 1
    else:  # token-grid CutMix alpha 1, no Mixup
        assert (mix.mixup_alpha, mix.cutmix_alpha) == (0.0, 1.0)
        assert mix.get('box_grid') is None  # the backbone's patch grid

    # data: 8 x 128, repeated augmentation x3, incomplete last batch dropped
    loader = cfg.train_dataloader
    assert loader.batch_size * 8 == 1024 and loader.drop_last is True
    sampler = DATA_SAMPLERS.build(loader.sampler, default_args=dict(dataset=list(range(10))))
    assert type(sampler).__name__ == 'RepeatAugSampler'
    assert sampler.num_repeats == 3 and sampler.shuffle
    check_deit_pipelines(cfg)

    # optimizer: AdamW lr 5e-4 x 1024 / 512, scaled with the total batch, wd 0.05, no clipping
    optim = cfg.optim_wrapper
    assert optim.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == pytest.approx(5e-4 * 1024 / 512)
    assert optim.optimizer.weight_decay == 0.05
    assert optim.optimizer.eps == 1e-8 and tuple(optim.optimizer.betas) == (0.9, 0.999)
    assert optim.get('clip_grad') is None
    assert cfg.auto_scale_lr == dict(base_batch_size=1024, enable=True)
    paramwise = optim.paramwise_cfg
    assert paramwise.norm_decay_mult == 0.0 and paramwise.bias_decay_mult == 0.0
    assert paramwise.custom_keys['.cls_token'].decay_mult == 0.0
    assert paramwise.custom_keys['.pos_embed'].decay_mult == 0.0

    # schedule: 300 epochs, 5 warm-up epochs from 1e-6, cosine to 1e-5
    assert cfg.train_cfg.max_epochs == 300 and cfg.train_cfg.val_interval == 1
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and (warmup.get('begin', 0), warmup.end) == (0, 5)
    assert warmup.start_factor * optim.optimizer.lr == pytest.approx(1e-6)
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 5
    assert cosine.eta_min == 1e-5 and cosine.get('end', 300) == 300

    # EMA: DeiT's recipe only, decay 0.99996 after every step
    emas = [h for h in cfg.custom_hooks if h.type == 'EMAHook']
    if kind == '_deit':
        assert len(emas) == 1 and emas[0].momentum == pytest.approx(1 - 0.99996)
        assert emas[0].get('interval', 1) == 1 and emas[0].get('begin_iter', 0) == 0
    else:
        assert emas == []
    # the reliability hooks of the recipes
    assert {'ExactResumeHook', 'NonFiniteLossHook', 'DataCheckHook'} <= \
        {h.type for h in cfg.custom_hooks}


def check_deit_pipelines(cfg):
    """timm's create_transform(224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
    interpolation='bicubic', re_prob=0.25, re_mode='pixel') and DeiT's test transform."""
    bgr_mean, bgr_std = MEAN[::-1], STD[::-1]
    load, crop, flip, randaug, erase, pack = cfg.train_dataloader.dataset.pipeline
    # decoded as torchvision's ImageFolder: Pillow, RGB, EXIF orientation ignored
    assert load == dict(type='LoadImageFromFile', imdecode_backend='pillow',
                        color_type='color_ignore_orientation')
    assert crop.type == 'RandomResizedCrop' and crop.scale == 224
    assert (crop.interpolation, crop.backend) == ('bicubic', 'pillow')
    assert tuple(crop.get('crop_ratio_range', (0.08, 1.0))) == (0.08, 1.0)
    assert tuple(crop.get('aspect_ratio_range', (3 / 4, 4 / 3))) == (3 / 4, 4 / 3)
    assert (flip.type, flip.prob, flip.direction) == ('RandomFlip', 0.5, 'horizontal')
    assert randaug.type == 'RandAugment' and randaug.policies == 'timm_increasing'
    assert (randaug.num_policies, randaug.magnitude_level, randaug.magnitude_std,
            randaug.total_level) == (2, 9, 0.5, 10)
    # timm fills with the mean colour (124, 116, 104) RGB; mmcv's images are BGR
    assert randaug.hparams == dict(pad_val=[104, 116, 124], interpolation='bicubic')
    assert erase.type == 'RandomErasing' and erase.erase_prob == 0.25 and erase.mode == 'rand'
    assert (erase.min_area_ratio, erase.max_area_ratio) == (0.02, 1 / 3)
    assert erase.get('aspect_range', (0.3, 1 / 0.3)) == pytest.approx((0.3, 1 / 0.3))
    assert erase.fill_color == pytest.approx(bgr_mean) and erase.fill_std == pytest.approx(bgr_std)
    assert pack.type == 'PackInputs'
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        load, resize, center, pack = loader.dataset.pipeline
        assert load == cfg.train_dataloader.dataset.pipeline[0]
        assert (resize.type, resize.scale, resize.edge) == ('ResizeEdge', 256, 'short')
        assert (resize.interpolation, resize.backend) == ('bicubic', 'pillow')
        assert (center.type, center.crop_size) == ('CenterCrop', 224)


@pytest.mark.parametrize('family,sizes,suffix',
                         [('deit', 'tsb', '_8xb128'), ('swin', 'tsb', '_16xb64')])
def test_baselines_differ_from_tlalign_only_in_model_align(family, sizes, suffix):
    for size in sizes:
        tlalign = load(f'{family}-{size}{suffix}.py').to_dict()
        cutmix = load(f'{family}-{size}{suffix}_cutmix.py').to_dict()
        assert differences(tlalign, cutmix) == ['model.align'], (family, size)
        assert (tlalign['model']['align'], cutmix['model']['align']) == (True, False)


def test_deit_recipe_differs_from_the_released_only_in_mixing_and_ema():
    for size in DEIT:
        cutmix, ours = deit(size, '_cutmix').to_dict(), deit(size, '_deit').to_dict()
        assert differences(cutmix, ours) == [
            'custom_hooks', 'model.mix.box_grid', 'model.mix.mixup_alpha',
            'model.mix.switch_prob']
        assert ours['custom_hooks'][:-1] == cutmix['custom_hooks']


def test_released_lr_schedule():
    """Per iteration: 1e-6 at the first step, 1e-3 when the warm-up ends at epoch 5, cosine to
    1e-5; within 1.1% of the peak lr of the released per-epoch schedule from epoch 7 on."""
    cfg = deit('s', '')
    lrs = lr_per_iteration(cfg, epoch_length=8)
    assert lrs[0, 0] == pytest.approx(1e-6)
    assert lrs[5, 0] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[:5].ravel()) > 0) and np.all(np.diff(lrs[5:].ravel()) < 0)
    assert lrs[-1, -1] == pytest.approx(1e-5, rel=1e-3)
    assert lrs[152, 4] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)  # cosine mid-point
    released = np.array([released_lr(e) for e in range(300)])
    assert np.abs(lrs[7:] - released[7:, None]).max() < 0.011 * 1e-3


def test_weight_decay_and_init_follow_timm():
    """Built for real (DeiT-T): timm's rule, no decay for 1-D parameters, biases, cls_token and
    pos_embed, decay 0.05 for every other weight; the head initialised like timm's."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = deit('t', '')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): group['weight_decay'] for group in optim.param_groups for p in group['params']}
    skip = {'backbone.cls_token', 'backbone.pos_embed'}
    for name, param in model.named_parameters():
        expected = 0.0 if param.ndim == 1 or name.endswith('.bias') or name in skip else 0.05
        assert decay[id(param)] == expected, name
    head = model.head.layers.head
    assert 0.015 < head.weight.std().item() < 0.025 and not head.bias.any()


# ------------------------------------------------------------------------------ the pairing
def test_flip_partners_even_and_odd_batches():
    assert flip_partners(1).tolist() == [0]
    assert flip_partners(2).tolist() == [1, 0]
    assert flip_partners(4).tolist() == [3, 2, 1, 0]
    assert flip_partners(3).tolist() == [2, 0, 0]  # the middle image takes image 0
    assert flip_partners(5).tolist() == [4, 3, 0, 1, 0]
    for B in range(2, 12):
        partner = flip_partners(B)
        assert not (partner == torch.arange(B)).any(), B
        if B % 2 == 0:
            assert torch.equal(partner[partner], torch.arange(B))  # pairs of two


def changed(mixed, inputs):
    """(B,) whether each image differs from the input image (images are all distinct)."""
    return (mixed.inputs != inputs).flatten(1).any(1)


@pytest.mark.parametrize('B', [4, 5])
def test_flip_pairing_mixes_every_image_and_mixed_says_so(B):
    mixer = TLAlignMix(cutmix_alpha=1.0, mixup_alpha=0.8, pairing='flip', seed=0)
    x = torch.randn(B, 3, 32, 32)
    seen_mixed = 0
    for _ in range(20):
        out = mixer(x, (8, 8))
        assert torch.equal(out.partner, flip_partners(B))
        assert torch.equal(out.mixed, changed(out, x))
        assert out.mixed.dtype == torch.bool and out.mixed.shape == (B,)
        if out.area_share.gt(0).all():
            assert out.mixed.all()  # nobody with itself, the middle one of an odd batch too
            seen_mixed += 1
    assert seen_mixed > 10


def test_random_pairing_leaves_images_paired_with_themselves_unmixed():
    mixer = TLAlignMix(cutmix_alpha=1.0, seed=1)
    x = torch.randn(4, 3, 32, 32)
    fixed_points = 0
    for _ in range(30):
        out = mixer(x, (8, 8))
        assert torch.equal(out.mixed, changed(out, x))
        itself = out.partner == torch.arange(4)
        assert not out.mixed[itself].any()
        fixed_points += int(itself.sum())
    assert fixed_points > 0  # about one per batch


def test_mixed_without_mixing_and_for_given_batches():
    x = torch.randn(4, 3, 32, 32)
    out = TLAlignMix(prob=0.0, pairing='flip', seed=0)(x, (8, 8))
    assert not out.mixed.any() and torch.equal(out.inputs, x)
    # built by hand (e.g. a test's fixed mixer): derived from partner and token shares
    share = torch.tensor([[0.0, 0.5], [0.0, 0.0], [1.0, 1.0], [0.25, 0.0]])
    given = MixedBatch(inputs=x, partner=torch.tensor([1, 0, 2, 0]), token_share=share,
                       area_share=share.mean(1), uniform=False)
    assert given.mixed.tolist() == [True, False, False, True]


def test_flip_pairing_resumes_like_an_uninterrupted_run():
    x = torch.randn(6, 3, 32, 32)
    mixer = TLAlignMix(pairing='flip', seed=4)
    mixer(x, (8, 8))
    state = mixer.state_dict()
    expected = [mixer(x, (8, 8)).inputs for _ in range(3)]
    resumed = TLAlignMix(pairing='flip', seed=99)
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(resumed(x, (8, 8)).inputs, want)


def test_unknown_pairing_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown TLAlignMix pairing 'reverse'.*'flip'"):
        TLAlignMix(pairing='reverse')


# ------------------------------------------------------------------------------ end to end
RECORD_HOOK = '''
"""Test-only hook for tests/test_deit_configs.py."""
import json
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordBatchHook(Hook):
    """Writes, per training iteration and process, the images of the batch (file names) and
    the mixer's partners, area shares and ``mixed``."""

    def before_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        base, hook = type(model.mixer), self
        self.path = osp.join(runner.work_dir, f'batches-rank{runner.rank}.jsonl')

        class Recording(base):
            def __call__(self, inputs, patch_size):
                out = base.__call__(self, inputs, patch_size)
                hook.mix = dict(partner=out.partner.tolist(), mixed=out.mixed.tolist(),
                                area=out.area_share.tolist())
                return out

        model.mixer.__class__ = Recording

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.files = [osp.basename(s.img_path) for s in data_batch['data_samples']]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with open(self.path, 'a') as f:
            f.write(json.dumps(dict(epoch=runner.epoch, files=self.files, **self.mix)) + '\\n')
'''

# the real config with a tiny ViT (the real 224-px DeiT pipelines stay) and the recorder
TINY = '''
_base_ = {config!r}
custom_imports = dict(imports=['mmtlalign', 'deitcfg_hooks'], allow_failed_imports=False)
custom_hooks = {hooks!r}
model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=3,
                                     feedforward_channels=96)),
             head=dict(in_channels=48))
randomness = dict(seed=0)
'''


@pytest.fixture(scope='module')
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('deit_e2e')
    hooks_dir = tmp / 'hooks'
    hooks_dir.mkdir()
    (hooks_dir / 'deitcfg_hooks.py').write_text(RECORD_HOOK)
    data = datagen.make_imagenet(str(tmp / 'imagenet'), per_class=2)  # 8 training images
    return dict(tmp=tmp, hooks_dir=str(hooks_dir), data=data)


def tiny_config(e2e, name):
    real = osp.join(ROOT, 'configs/tlalign', name)
    hooks = [dict(h) for h in Config.fromfile(real).custom_hooks]
    path = e2e['tmp'] / f'tiny_{name}'
    path.write_text(TINY.format(config=real, hooks=hooks + [dict(type='RecordBatchHook')]))
    return str(path)


def run(e2e, cmd, port=None):
    env = dict(os.environ, PYTHONPATH=f'{ROOT}:{e2e["hooks_dir"]}', OMP_NUM_THREADS='1',
               PYTHON=PY)
    if port:
        env['PORT'] = port
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def records(work_dir, rank=0):
    with open(osp.join(work_dir, f'batches-rank{rank}.jsonl')) as f:
        return [json.loads(line) for line in f]


def read_log(work_dir):
    return open(sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]).read()




def assert_repeated_and_flipped(recs, batch):
    """Each batch paired i <-> B-1-i and every image mixed (when the box is not empty); the
    epoch's images are repeated-augmentation copies: 8 images drawn as 3 + 3 + 2 copies."""
    for rec in recs:
        assert rec['partner'] == flip_partners(batch).tolist()
        assert rec['mixed'] == [a > 0 for a in rec['area']]
    files = [f for rec in recs for f in rec['files']]
    assert sorted(collections.Counter(files).values()) == [2, 3, 3]


@pytest.mark.slow
def test_tlalign_recipe_trains_with_repeated_augmentation_and_the_pairing(e2e):
    work = str(e2e['tmp'] / 'tlalign')
    run(e2e, [PY, 'tools/train.py', tiny_config(e2e, 'deit-s_8xb128.py'), '--work-dir', work,
              '--cfg-options', *datagen.tiny_cls_options(e2e['data'])])
    log = read_log(work)
    assert 'token_fluctuation' in log and 'Epoch(val) [1]' in log
    recs = records(work)
    assert len(recs) == 2  # 8 images, batch 4, last incomplete batch dropped
    assert_repeated_and_flipped(recs, 4)
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


@pytest.mark.slow
def test_tlalign_recipe_trains_on_two_processes(e2e):
    work = str(e2e['tmp'] / 'tlalign_dist')
    run(e2e, ['bash', 'tools/dist_train.sh', tiny_config(e2e, 'deit-s_8xb128.py'), '2',
              '--work-dir', work, '--cfg-options',
              *datagen.tiny_cls_options(e2e['data'], batch_size=2)], port=free_port())
    log = read_log(work)
    assert 'Distributed training: True' in log and 'Epoch(train) [1][2/2]' in log
    per_rank = [records(work, rank) for rank in (0, 1)]
    assert all(len(recs) == 2 for recs in per_rank)  # 4 images per process, batch 2
    # the copies of an image go to both processes (RepeatAugSampler), 3 + 3 + 2 in all
    assert_repeated_and_flipped(per_rank[0] + per_rank[1], 2)
    files = [{f for rec in recs for f in rec['files']} for recs in per_rank]
    assert files[0] == files[1] and len(files[0]) == 3


@pytest.mark.slow
def test_deit_recipe_trains_with_ema(e2e):
    work = str(e2e['tmp'] / 'deit')
    run(e2e, [PY, 'tools/train.py', tiny_config(e2e, 'deit-s_8xb128_deit.py'), '--work-dir',
              work, '--cfg-options', *datagen.tiny_cls_options(e2e['data'])])
    assert 'Epoch(val) [1]' in read_log(work)
    assert_repeated_and_flipped(records(work), 4)
    from mmengine.runner import CheckpointLoader  # mmtlalign's weights-only loader
    ckpt = CheckpointLoader.load_checkpoint(osp.join(work, 'epoch_1.pth'), map_location='cpu')
    assert 'ema_state_dict' in ckpt  # mmengine's EMAHook kept the average
