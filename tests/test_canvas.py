"""RandomCanvas (mmtlalign/datasets/canvas.py) and the canvas configs (issue 33).

The transform is checked on its own (positions, whole objects, the mask, centring, seeding),
then as the canvas configs use it: mmpretrain's FashionMNIST reading idx files written in the
real format, the dataloaders the mmengine Runner builds from the configs (seeded), and a
training run of tools/train.py.
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from mmtlalign.errors import UserInputError

import datagen
from helpers import PY, ROOT, ok, run_tool

DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
ARMS = ('cutmix', 'tlalign', 'transmix', 'oracle')


def build(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import TRANSFORMS

    import mmtlalign.datasets  # noqa: F401  (registers RandomCanvas)
    init_default_scope('mmpretrain')
    return TRANSFORMS.build(cfg)


def garment(h=20, w=12, seed=0):
    """A 28x28 grey image whose object (nonzero pixels) is an h x w block with holes, off
    centre, so that its box is not the image."""
    rng = np.random.default_rng(seed)
    img = np.zeros((28, 28), np.uint8)
    img[3:3 + h, 9:9 + w] = rng.integers(0, 256, (h, w))  # some zeros: holes in the object
    img[3, 9] = img[2 + h, 8 + w] = 255  # the box's corners are set
    return img


def test_positions_cover_the_canvas_and_the_object_stays_whole():
    t = build(dict(type='RandomCanvas', canvas_size=56))
    img = garment()
    np.random.seed(0)
    tops, lefts = set(), set()
    for _ in range(600):
        out = t(dict(img=img.copy()))
        canvas, mask = out['img'], out['fg_mask']
        y, x = out['canvas_offset']
        tops.add(y)
        lefts.add(x)
        assert canvas.shape == (56, 56) and canvas.dtype == np.uint8
        assert out['img_shape'] == (56, 56)
        # the object, whole, where the offset says; black everywhere else
        assert np.array_equal(canvas[y:y + 20, x:x + 12], img[3:23, 9:21])
        assert canvas.sum(dtype=np.int64) == img.sum(dtype=np.int64)
        # the mask is exactly the garment's nonzero pixels after placement
        assert mask.dtype == np.bool_ and np.array_equal(mask, canvas > 0)
    # every position that keeps the object whole is drawn (box 20x12: 37 rows x 45 columns)
    assert tops == set(range(56 - 20 + 1)) and lefts == set(range(56 - 12 + 1))


def test_centred_for_validation_and_channels_kept():
    t = build(dict(type='RandomCanvas', canvas_size=56, random=False))
    img = garment()
    offsets = {t(dict(img=img.copy()))['canvas_offset'] for _ in range(5)}
    assert offsets == {((56 - 20) // 2, (56 - 12) // 2)}  # the object's box centred, always
    # a colour (H, W, C) image: channels kept, the mask is where any channel is nonzero
    rgb = np.zeros((28, 28, 3), np.float32)
    rgb[10:14, 5:9, 1] = 0.5
    out = t(dict(img=rgb))
    assert out['img'].shape == (56, 56, 3) and out['img'].dtype == np.float32
    assert out['fg_mask'].shape == (56, 56) and out['fg_mask'].sum() == 16
    assert np.array_equal(out['fg_mask'], out['img'].any(-1))
    assert out['canvas_offset'] == (26, 26)
    # an all-black image has no object: the whole image is placed (nothing to lose)
    blank = t(dict(img=np.zeros((28, 28), np.uint8)))
    assert blank['canvas_offset'] == (14, 14) and not blank['fg_mask'].any()


def test_seeded_positions_repeat():
    t = build(dict(type='RandomCanvas', canvas_size=56))

    def draws(seed):
        np.random.seed(seed)
        return [t(dict(img=garment()))['canvas_offset'] for _ in range(20)]

    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_bad_canvas_is_one_line():
    with pytest.raises(UserInputError, match=r'28x28, larger than the 20x20 canvas; raise '
                       'canvas_size') as e:
        build(dict(type='RandomCanvas', canvas_size=20))(dict(img=garment()))
    assert '\n' not in str(e.value)
    with pytest.raises(UserInputError, match='canvas_size must be a positive int'):
        build(dict(type='RandomCanvas', canvas_size=0))


def test_canvas_arms_differ_only_in_the_label_rule():
    cfgs = {a: Config.fromfile(osp.join(DEMO, f'fmnist_canvas_vit_{a}.py')).to_dict()
            for a in ARMS}
    plain = Config.fromfile(osp.join(DEMO, 'fmnist_vit_cutmix.py')).to_dict()
    aligns = {a: c['model'].pop('align') for a, c in cfgs.items()}
    assert aligns == dict(cutmix=False, tlalign=True, transmix='TransMixLabel',
                          oracle='ContentLabel')
    cfgs['tlalign']['model']['backbone'].pop('residual_weight')
    assert cfgs['cutmix'] == cfgs['tlalign'] == cfgs['transmix'] == cfgs['oracle']
    c = cfgs['cutmix']
    # the deltas from the 28x28 demo: a 56x56 canvas, the same 7-px patches (8x8 tokens) ...
    assert c['model']['backbone']['img_size'] == 56 and c['model']['backbone']['patch_size'] == 7
    train, test = c['train_dataloader']['dataset'], c['test_dataloader']['dataset']
    assert train['pipeline'][0] == dict(type='RandomCanvas', canvas_size=56)
    assert dict(type='RandomCanvas', canvas_size=56, random=False) in test['pipeline']
    # ... and the garment's mask packed for the label rules and the label_fidelity stage
    for pipe in (train['pipeline'], test['pipeline'], c['val_dataloader']['dataset']['pipeline']):
        assert pipe[-1] == dict(type='PackInputs', algorithm_keys=['fg_mask'])
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'data_preprocessor'):
        assert c[key] == plain[key], key
    for part in ('mix', 'head', 'type'):
        assert c['model'][part] == plain['model'][part], part
    assert train['split'] == 'train' and test['split'] == 'test'
    assert train['indices'] == plain['train_dataloader']['dataset']['indices']


@pytest.fixture(scope='module')
def fmnist(tmp_path_factory):
    """Idx files in the real Fashion-MNIST format, prepared as the configs expect them."""
    from mmtlalign.datasets import prepare_fashion_mnist
    tmp = tmp_path_factory.mktemp('canvas')
    datagen.write_fmnist(str(tmp / 'src'), n_train=64, n_test=16, gz=True)
    return prepare_fashion_mnist(str(tmp / 'fmnist'), source=str(tmp / 'src'))


def canvas_cfg(root, work_dir, seed, arm='cutmix'):
    cfg = Config.fromfile(osp.join(DEMO, f'fmnist_canvas_vit_{arm}.py'))
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': root,
                         'val_dataloader.dataset.data_root': root,
                         'test_dataloader.dataset.data_root': root,
                         'train_dataloader.dataset.indices': 32,
                         'val_dataloader.dataset.indices': 16,
                         'test_dataloader.dataset.indices': 16,
                         'train_dataloader.batch_size': 8,
                         'randomness.seed': seed, 'custom_hooks': [],
                         'work_dir': str(work_dir)})
    return cfg


def first_batch(cfg, split):
    """The first batch of ``split`` as the Runner's seeded dataloader gives it."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    return next(iter(getattr(runner, f'{split}_dataloader')))


def test_runner_dataloaders_carry_the_mask_seeded(fmnist, tmp_path):
    images, _ = datagen.fake_fashion_mnist(64, seed=0)  # what write_fmnist wrote for train
    batch = first_batch(canvas_cfg(fmnist, tmp_path / 'a', seed=0), 'train')
    assert len(batch['inputs']) == 8
    offsets = []
    for inp, sample in zip(batch['inputs'], batch['data_samples']):
        assert tuple(inp.shape) == (1, 56, 56)  # PackInputs: channel first, the canvas
        mask = sample.fg_mask
        assert isinstance(mask, np.ndarray) and mask.shape == (56, 56) and mask.dtype == bool
        assert np.array_equal(mask, inp[0].numpy() > 0)
        # the whole 28x28 garment is on the canvas (fake images have no black margin)
        ys, xs = np.nonzero(inp[0].numpy())
        y, x = ys.min(), xs.min()
        assert ys.max() - y < 28 and xs.max() - x < 28
        crop = inp[0, y:y + 28, x:x + 28].numpy()
        assert any(np.array_equal(crop, img) for img in images), 'the image is not whole'
        offsets.append((int(y), int(x)))
    assert len(set(offsets)) > 1  # random positions
    # seeded: the same seed gives the same positions, another seed others
    again = first_batch(canvas_cfg(fmnist, tmp_path / 'b', seed=0), 'train')
    other = first_batch(canvas_cfg(fmnist, tmp_path / 'c', seed=1), 'train')
    same = [np.array_equal(a.fg_mask, b.fg_mask)
            for a, b in zip(batch['data_samples'], again['data_samples'])]
    assert all(same)
    assert not all(np.array_equal(a.fg_mask, b.fg_mask)
                   for a, b in zip(batch['data_samples'], other['data_samples']))
    # validation: every garment centred (28x28 at offset 14)
    val = first_batch(canvas_cfg(fmnist, tmp_path / 'd', seed=0), 'val')
    test_images, _ = datagen.fake_fashion_mnist(16, seed=1)
    for inp, sample, img in zip(val['inputs'], val['data_samples'], test_images):
        assert np.array_equal(inp[0, 14:42, 14:42].numpy(), img)
        assert inp[0].numpy().sum() == img.sum(dtype=np.int64)
        assert np.array_equal(sample.fg_mask, inp[0].numpy() > 0)


@pytest.mark.slow
def test_canvas_arm_trains_with_tools_train(fmnist, tmp_path):
    work = str(tmp_path / 'work')
    out = ok(run_tool([
        PY, osp.join(ROOT, 'tools', 'train.py'),
        osp.join(DEMO, 'fmnist_canvas_vit_tlalign.py'), '--work-dir', work, '--cfg-options',
        *(f'{k}.dataset.data_root={fmnist}' for k in ('train_dataloader', 'val_dataloader',
                                                        'test_dataloader')),
        'train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=16',
        'train_dataloader.batch_size=8', 'train_cfg.max_epochs=1',
        'param_scheduler.0.end=0.25', 'param_scheduler.1.begin=0.25']))
    ran = Config.fromfile(osp.join(work, 'fmnist_canvas_vit_tlalign.py'))  # mmengine's dump
    assert ran.train_dataloader.dataset.pipeline[0] == dict(type='RandomCanvas', canvas_size=56)
    assert ran.model.backbone.img_size == 56 and 'Epoch(train) [1]' in out
    scalars = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))[-1]
    lines = [json.loads(line) for line in open(scalars)]
    assert any('accuracy/top1' in d for d in lines)
    # TL-Align moved the labels on the canvas (its drift is logged, and not 0)
    drift = [d['drift/final'] for d in lines if 'drift/final' in d]
    assert drift and max(drift) > 0
