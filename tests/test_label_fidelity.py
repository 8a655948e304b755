"""The content share, the oracle label rule (ContentLabel) and the ``label_fidelity`` evaluation
stage, on generated Fashion-MNIST files in their real idx layout placed on the canvas of the
canvas suite (configs/tlalign/demo/fmnist_canvas_vit_*.py).

The references here are independent: the content share counted pixel by pixel in numpy, and the
stage's pairs and CutMix boxes rebuilt from their documented recipe (seeded generator per group,
shuffle, flip pairing, CutMix box geometry) with numpy loops.
"""
import os.path as osp

import numpy as np
import pytest
import torch

from mmtlalign.errors import UserInputError

import datagen
from helpers import ROOT

DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def content_share_loops(fg, mask, partner):
    """The content share counted pixel by pixel: partner foreground under the pasted pixels
    over all visible foreground; the area share where nothing is visible."""
    fg, mask = np.asarray(fg, bool), np.asarray(mask, np.float64)
    B, H, W = fg.shape
    out = np.zeros(B)
    for b in range(B):
        theirs = mine = 0.0
        for y in range(H):
            for x in range(W):
                if fg[partner[b], y, x]:
                    theirs += mask[b, y, x]
                if fg[b, y, x]:
                    mine += 1 - mask[b, y, x]
        out[b] = theirs / (theirs + mine) if theirs + mine > 0 else mask[b].mean()
    return out


def test_content_share_counts_the_visible_foreground():
    from mmtlalign.models.labels.content import content_share
    rng = np.random.default_rng(0)
    B, H, W = 6, 12, 10
    fg = np.zeros((B, H, W), bool)
    for b in range(B):  # an object somewhere on a background, as on the canvas
        y, x = rng.integers(0, 6), rng.integers(0, 5)
        fg[b, y:y + 6, x:x + 5] = rng.random((6, 5)) < 0.8
    fg[5] = False  # no foreground at all
    mask = np.zeros((B, H, W))
    for b in range(B):
        y, x, h, w = rng.integers(0, 6), rng.integers(0, 5), rng.integers(2, 7), rng.integers(2, 6)
        mask[b, y:y + h, x:x + w] = 1.0
    mask[2] = np.where(mask[2] > 0, 1.0, 0.3)  # fractional (a soft / blended mask)
    mask[4] = 0  # nothing pasted
    partner = np.array([3, 0, 1, 2, 4, 0])
    partner[5] = 5  # image 5 pastes onto itself: nothing visible anywhere -> area share
    got = content_share(torch.as_tensor(fg), torch.as_tensor(mask, dtype=torch.float32),
                        torch.as_tensor(partner)).numpy()
    want = content_share_loops(fg, mask, partner)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    area = mask.mean(axis=(1, 2))
    assert got[4] == 0 and got[5] == pytest.approx(area[5])
    # where the rules can differ at all: the content share is not the area share
    assert np.abs(want[:4] - area[:4]).min() > 0.02, (want, area)
    # image 0: the box hides its object and shows none of its partner's -> area share;
    # image 1: one object of each visible, same size -> 0.5
    fg2 = np.zeros((2, 8, 8), bool)
    fg2[0, 2:4, 2:4] = fg2[1, 6:8, 6:8] = True
    m2 = np.zeros((2, 8, 8))
    m2[:, 0:5, 0:5] = 1
    got2 = content_share(torch.as_tensor(fg2), torch.as_tensor(m2), torch.tensor([1, 0]))
    np.testing.assert_allclose(got2.numpy(), [25 / 64, 0.5], atol=1e-7)
    with pytest.raises(UserInputError, match='same size'):
        content_share(torch.as_tensor(fg), torch.zeros(B, H, W + 1), torch.as_tensor(partner))


def test_tlalignmix_keeps_its_pixel_mask():
    from mmtlalign.models.mixing import TLAlignMix
    x = torch.rand(4, 1, 16, 16)
    mixed = TLAlignMix(cutmix_alpha=1.0, mode='elem', box_grid=1, seed=3)(x, (4, 4))
    m = mixed.pixel_mask
    assert m.shape == (4, 16, 16)
    torch.testing.assert_close(mixed.inputs, x * (1 - m[:, None]) + x[mixed.partner] * m[:, None])
    torch.testing.assert_close(mixed.area_share, m.mean(dim=(1, 2)))
    assert TLAlignMix(seed=0)(x[:1], (4, 4)).pixel_mask.sum() == 0  # unmixed: nothing pasted


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope='module')
def fmnist(tmp_path_factory):
    """Generated Fashion-MNIST idx files, prepared as the configs read them."""
    tmp = tmp_path_factory.mktemp('fidelity')
    src, root = str(tmp / 'src'), str(tmp / 'fmnist')
    images = datagen.write_fmnist(src, n_train=16, n_test=20, gz=True)
    # a black background around the band, as a garment's: the canvas places the nonzero box
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    return root, images


def canvas_options(root, **extra):
    opts = {f'{loader}.dataset.data_root': root for loader in LOADERS}
    opts.update({f'{loader}.dataset.indices': None for loader in LOADERS})
    opts.update(extra)
    return opts


def load_cfg(name, opts):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(DEMO, name))
    cfg.merge_from_dict(opts)
    return cfg


def random_checkpoint(cfg, path, seed):
    """The config's model, freshly initialised with ``seed``, saved as a checkpoint."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model_cfg = cfg.model.copy()
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def test_content_label_trains_in_a_runner_step(fmnist, tmp_path):
    """The oracle arm's config through the real Runner: the batch's fg masks reach the rule,
    and the target share is the content share of what the mixer pasted."""
    from mmengine.runner import Runner

    root, _ = fmnist
    cfg = load_cfg('fmnist_canvas_vit_oracle.py', canvas_options(
        root, **{'train_dataloader.batch_size': 8, 'train_cfg.max_epochs': 1,
                 'train_cfg.val_interval': 5, 'param_scheduler.0.end': 0.5,
                 'param_scheduler.1.begin': 0.5}))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    seen, targets = [], []
    mix, class_token_loss = model._mix, model._class_token_loss

    def spy(inputs):  # what the classifier mixed, and the batch it came from
        mixed = mix(inputs)
        seen.append((inputs.detach().clone(), mixed))
        return mixed

    def loss_spy(feats, share, data_samples, labels, mixed, tokens=None):
        out = class_token_loss(feats, share, data_samples, labels, mixed, tokens)
        targets.append((share, torch.stack([s.gt_score for s in data_samples]), labels))
        return out
    model._mix, model._class_token_loss = spy, loss_spy
    runner.train()
    assert len(seen) == len(targets) == 2  # 16 images, batch 8
    inputs, mixed = seen[-1]
    share, gt_score, labels = targets[-1]
    # the foreground: the placed garment's nonzero pixels, seen here in the normalised images
    background = (0 - 72.94) / 90.01
    fg = inputs[:, 0] > background + 1e-4
    torch.testing.assert_close(mixed.fg_mask, fg, rtol=0, atol=0)
    assert fg.float().mean() < 0.5  # a canvas: mostly background
    want = content_share_loops(fg.numpy(), mixed.pixel_mask.numpy(), mixed.partner.numpy())
    np.testing.assert_allclose(share.numpy(), want, rtol=1e-5, atol=1e-6)
    assert (share - mixed.area_share).abs().max() > 0.01  # not the area label
    # the head trained against (1 - s) y_a + s y_b with that share
    y = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(gt_score, (1 - share[:, None]) * y + share[:, None] *
                               y[mixed.partner])
    assert np.isfinite(runner.message_hub.get_scalar('train/loss').current())


def test_content_label_without_fg_masks_is_one_line(fmnist):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    root, _ = fmnist
    cfg = load_cfg('fmnist_vit_cutmix.py', canvas_options(root))
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(cfg.model, align='ContentLabel',
                              data_preprocessor=cfg.data_preprocessor))
    def samples(fg=None):
        out = []
        for i in range(4):
            sample = DataSample()
            sample.set_gt_label(i)
            if fg is not None:
                sample.set_field(fg, 'fg_mask')
            out.append(sample)
        return out
    hint = r"fg_mask.*RandomCanvas.*algorithm_keys=\['fg_mask'\]"
    with pytest.raises(UserInputError, match=hint):
        model.loss(torch.randn(4, 1, 28, 28), samples())
    # the mixer must keep its pixel mask
    model.mixer = MODELS.build(dict(type='MaskMix', cell_size=7, seed=0))
    with pytest.raises(UserInputError, match="pixel mask.*TLAlignMix"):
        model.loss(torch.randn(4, 1, 28, 28), samples(np.ones((28, 28), bool)))


# ------------------------------------------------------------------------------- the stage
def stage_pairs(seed, group_sizes, patch, size, alpha=1.0):
    """The documented pairs and boxes, rebuilt: per group g a generator seeded by (seed, g)
    shuffles the group, draws CutMix's uniform 'mixed?' numbers, lambda ~ Beta(alpha, alpha)
    and the box centres (rows, then columns) on the patch grid; image i of the shuffled group
    takes image n - 1 - i (odd n: the middle one takes image 0). Returns per group
    ``(order, partner, box masks (n, size, size))``."""
    out = []
    gh = size // patch
    for g, n in enumerate(group_sizes):
        rng = np.random.default_rng([seed, g])
        order = rng.permutation(n)
        rng.random(n)
        lam = rng.beta(alpha, alpha, n)
        cut = (gh * np.sqrt(1 - lam)).astype(int)
        cy, cx = rng.integers(0, gh, n), rng.integers(0, gh, n)
        boxes = np.zeros((n, size, size))
        for i in range(n):
            y1, y2 = np.clip([cy[i] - cut[i] // 2, cy[i] + cut[i] // 2], 0, gh) * patch
            x1, x2 = np.clip([cx[i] - cut[i] // 2, cx[i] + cut[i] // 2], 0, gh) * patch
            boxes[i, y1:y2, x1:x2] = 1
        partner = np.arange(n)[::-1].copy()
        if n % 2:
            partner[n // 2] = 0
        out.append((order, partner, boxes))
    return out


def test_label_fidelity_stage_on_the_canvas(fmnist, tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from mmtlalign.evaluation.cli import evaluate
    root, _ = fmnist
    opts = canvas_options(root)
    config = osp.join(DEMO, 'fmnist_canvas_vit_tlalign.py')
    cfg = load_cfg('fmnist_canvas_vit_tlalign.py', opts)
    spec = [dict(kind='label_fidelity', group_size=8, num_points=100)]
    results = []
    for seed in (0, 1):  # two models (two seeds of an arm): the same pairs and boxes
        ckpt = random_checkpoint(cfg, str(tmp_path / f'seed{seed}.pth'), seed)
        results.append(evaluate(config, ckpt, spec, str(tmp_path / f'ev{seed}'),
                                cfg_options=opts, echo=lambda m: None)['label_fidelity'])
    res = results[0]
    assert res['status'] == 'done' and res['num_images'] == 20
    curves, metrics = res['curves'], res['metrics']
    assert set(curves['rules']) == {'area', 'TransMix', 'TL-Align'}
    assert set(curves['not_applicable']) == {'PAL', 'SMMix'}

    # the independent recomputation of the area rule's error: the test images on the canvas
    # as the test pipeline gives them, the pairs and boxes from their recipe, counted in numpy
    init_default_scope('mmpretrain')
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    fg_all = np.stack([ds[i]['data_samples'].fg_mask for i in range(len(ds))])
    want_content, want_area, idx = [], [], []
    for g, (order, partner, boxes) in enumerate(stage_pairs(0, [8, 8, 4], 7, 56)):
        fg = fg_all[g * 8:g * 8 + len(order)][order]
        want_content += list(content_share_loops(fg, boxes, partner))
        want_area += list(boxes.mean(axis=(1, 2)))
        idx += list(g * 8 + order)
    want_content, want_area = np.array(want_content), np.array(want_area)
    real = (want_area > 0) & (want_area < 1)
    mae = 100 * np.abs(want_area - want_content)[real].mean()
    assert metrics['share MAE area'] == pytest.approx(mae, rel=1e-5)
    assert curves['num_pairs'] == real.sum() and curves['excluded']['no_real_mix'] == (~real).sum()
    r = np.corrcoef(want_area[real], want_content[real])[0, 1]
    assert metrics['share r area'] == pytest.approx(r, rel=1e-5)
    # the points of the scatter are those pairs
    pts = curves['points']
    at = {int(i): k for k, i in enumerate(idx)}
    for i, c, a in zip(pts['sample_idx'], pts['content'], pts['area']):
        assert c == pytest.approx(want_content[at[i]], abs=1e-5)
        assert a == pytest.approx(want_area[at[i]], abs=1e-5)
    # the traced rules move away from the area share; the differences are of one model
    for rule in ('TransMix', 'TL-Align'):
        assert metrics[f'share MAE {rule} vs area'] == pytest.approx(
            metrics[f'share MAE {rule}'] - metrics['share MAE area'])
        assert pts[rule] != pts['area']
    # another model: the same pairs, boxes and content shares, other rule shares
    other = results[1]['curves']['points']
    assert other['sample_idx'] == pts['sample_idx'] and other['content'] == pts['content']
    assert other['area'] == pts['area'] and other['TL-Align'] != pts['TL-Align']


def test_label_fidelity_without_fg_masks_is_skipped_once(fmnist, tmp_path):
    from mmtlalign.evaluation.cli import evaluate
    from mmtlalign.evaluation.stages import build_stage
    root, _ = fmnist
    opts = canvas_options(root)
    cfg = load_cfg('fmnist_vit_cutmix.py', opts)  # 28x28, no canvas, no fg_mask
    ckpt = random_checkpoint(cfg, str(tmp_path / 'plain.pth'), 0)
    lines = []
    res = evaluate(osp.join(DEMO, 'fmnist_vit_cutmix.py'), ckpt,
                   [dict(kind='label_fidelity'), dict(kind='calibration')],
                   str(tmp_path / 'ev'), cfg_options=opts, echo=lines.append)
    assert res['label_fidelity']['status'] == 'missing'
    assert 'fg_mask' in res['label_fidelity']['reason']
    assert res['calibration']['status'] == 'done'
    assert sum('skipped, not scored' in line for line in lines) == 1
    with pytest.raises(UserInputError, match="unknown label rule 'Nope'"):
        build_stage(dict(kind='label_fidelity', rules=['AreaLabel', 'Nope']))


# ------------------------------------------------------------------- ImageNet's boxes
def write_box_xml(path, size, boxes):
    """An ILSVRC Pascal-VOC box file (as in ILSVRC2012_bbox_val_v3.tgz)."""
    objs = ''.join(
        f'<object><name>n01440764</name><pose>Unspecified</pose><truncated>0</truncated>'
        f'<difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>'
        f'<ymax>{y2}</ymax></bndbox></object>' for x1, y1, x2, y2 in boxes)
    with open(path, 'w') as f:
        f.write(f'<annotation><folder>val</folder><filename>{osp.basename(path)[:-4]}'
                f'</filename><source><database>ILSVRC_2012</database></source><size><width>'
                f'{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>'
                f'<segmented>0</segmented>{objs}</annotation>')


def test_imagenet_boxes_give_the_mask_of_the_image_the_model_sees(tmp_path):
    import os

    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    from PIL import Image

    import mmtlalign  # noqa: F401
    from mmtlalign.datasets.imagenet_robustness import RobustnessSetMissing
    root = datagen.make_imagenet(str(tmp_path / 'imagenet'), num_classes=2, per_class=1,
                                 val_per_class=2)
    os.makedirs(osp.join(root, 'ILSVRC2012_bbox_val_v3', 'val'))
    rng = np.random.default_rng(0)
    boxes = {}
    for name in sorted(os.listdir(osp.join(root, 'val'))):
        h, w = 48, 80  # not square: the short-edge resize and the centre crop both matter
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(
            osp.join(root, 'val', name), format='JPEG')
        b = [(5, 4, 30, 40), (50, 10, 79, 20)][:1 + len(boxes) % 2]
        boxes[name] = b
        write_box_xml(osp.join(root, 'ILSVRC2012_bbox_val_v3', 'val', name[:-5] + '.xml'),
                      (h, w), b)
    init_default_scope('mmpretrain')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='FgMaskFromBoxes', transforms=[
                    dict(type='ResizeEdge', scale=32, edge='short', backend='pillow'),
                    dict(type='CenterCrop', crop_size=32)]),
                dict(type='PackInputs', algorithm_keys=['fg_mask'])]
    ds = DATASETS.build(dict(type='ImageNetBoxes', data_root=root, pipeline=pipeline))
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        name = osp.basename(ds.get_data_info(i)['img_path'])
        fg = np.asarray(item['data_samples'].fg_mask)
        assert tuple(item['inputs'].shape) == (3, 32, 32) and fg.shape == (32, 32)
        # the boxes mapped by hand: x 80 -> 53 (scale 2/3), centre crop (53 - 32) // 2 = 10
        want = np.zeros((32, 32), bool)
        for x1, y1, x2, y2 in boxes[name]:  # ILSVRC's max is the last pixel of the box
            r1, r2 = y1 * 2 / 3, (y2 + 1) * 2 / 3
            c1, c2 = x1 * 2 / 3 - 10, (x2 + 1) * 2 / 3 - 10
            ys, xs = np.mgrid[0:32, 0:32] + 0.5  # pixel centres
            want |= (ys > r1) & (ys < r2) & (xs > c1) & (xs < c2)
        # the mask rode through the interpolation as a channel: a few edge pixels may flip
        assert (fg != want).sum() <= 4 and want.sum() > 200, (name, (fg != want).sum())
    with pytest.raises(RobustnessSetMissing, match='ILSVRC2012_bbox_val_v3'):
        DATASETS.build(dict(type='ImageNetBoxes', data_root=root, box_root=str(tmp_path)))
    os.remove(osp.join(root, 'ILSVRC2012_bbox_val_v3', 'val', 'ILSVRC2012_val_00000000.xml'))
    with pytest.raises(UserInputError, match='no box file'):
        DATASETS.build(dict(type='ImageNetBoxes', data_root=root))


# -------------------------------------------------------------------- in a benchmark suite
def canvas_suite(tmp_path, root, arms, seeds=(0,), **stage):
    demo = DEMO
    entries = ', '.join(f"dict(name={name!r}, label={name!r}, config={osp.join(demo, cfg)!r}"
                        + (f", baseline={arms[0][0]!r})" if i else ')')
                        for i, (name, cfg) in enumerate(arms))
    options = canvas_options(root, **{'train_cfg.max_epochs': 1,
                                      'train_dataloader.batch_size': 8,
                                      'param_scheduler.0.end': 0.5,
                                      'param_scheduler.1.begin': 0.5})
    path = tmp_path / 'suite.py'
    path.write_text(f'seeds = {list(seeds)!r}\narms = [{entries}]\ncfg_options = {options!r}\n'
                    f'evaluation = [dict(kind="label_fidelity", **{stage!r})]\n')
    return str(path)


def test_suite_skips_label_fidelity_once_where_an_arm_has_no_fg_mask(fmnist, tmp_path):
    from mmtlalign.benchmark import load_suite
    from mmtlalign.benchmark.evaluations import check_data
    root, _ = fmnist
    suite = load_suite(canvas_suite(tmp_path, root, [('canvas', 'fmnist_canvas_vit_cutmix.py'),
                                                     ('plain', 'fmnist_vit_cutmix.py')]))
    assert 'share MAE TL-Align vs area' in [m.name for m in suite.metrics]
    lines = []
    skipped = check_data(suite, lines.append)
    assert list(skipped) == ['label_fidelity'] and 'fg_mask' in skipped['label_fidelity']
    assert len(lines) == 1 and not any(m.stage == 'label_fidelity' for m in suite.metrics)
    suite = load_suite(canvas_suite(tmp_path, root, [('canvas', 'fmnist_canvas_vit_cutmix.py'),
                                                     ('oracle', 'fmnist_canvas_vit_oracle.py')]))
    assert check_data(suite, lines.append) == {}


@pytest.mark.slow
@pytest.mark.e2e
def test_label_fidelity_in_a_benchmark_suite(fmnist, tmp_path):
    """tools/benchmark.py on a tiny canvas suite (2 arms x 2 seeds): the stage's metrics per
    seed, the paired differences between arms and within each model, the scatter."""
    import json
    import statistics

    from PIL import Image

    from helpers import PY, ok, run_tool
    root, _ = fmnist
    suite = canvas_suite(tmp_path, root, [('cutmix', 'fmnist_canvas_vit_cutmix.py'),
                                          ('tlalign', 'fmnist_canvas_vit_tlalign.py')],
                         seeds=(0, 1), group_size=10)
    work = str(tmp_path / 'work')
    ok(run_tool([PY, osp.join(ROOT, 'tools', 'benchmark.py'), suite, '--work-dir', work,
                 '--jobs', '2']))
    res = json.load(open(osp.join(work, 'results.json')))
    per_seed = {}
    for arm in ('cutmix', 'tlalign'):
        for seed in (0, 1):
            path = osp.join(work, arm, f'seed{seed}', 'evaluation', 'label_fidelity.json')
            per_seed[arm, seed] = json.load(open(path))['metrics']
        for name in ('share MAE area', 'share r TL-Align', 'share MAE TL-Align vs area'):
            assert res['arms'][arm]['metrics'][name]['per_seed'] == {
                str(s): per_seed[arm, s][name] for s in (0, 1)}
    # within each model: TL-Align's MAE minus area's, paired over the seeds, with its interval
    within = {(r['arm'], r['rule']): r for r in res['evaluation']['within_model']}
    for arm in ('cutmix', 'tlalign'):
        r = within[arm, 'TL-Align']
        diffs = [per_seed[arm, s]['share MAE TL-Align'] - per_seed[arm, s]['share MAE area']
                 for s in (0, 1)]
        assert r['diffs'] == pytest.approx(diffs) and r['baseline'] == 'area'
        half = 12.7062 * statistics.stdev(diffs) / 2 ** 0.5
        assert r['ci'] == pytest.approx([statistics.mean(diffs) - half,
                                         statistics.mean(diffs) + half], rel=1e-3)
    md = open(osp.join(work, 'results.md')).read()
    assert '- TL-Align - area share MAE, same model (pp, paired over seeds): cutmix ' in md
    assert '## share MAE TL-Align vs area (label_fidelity)' in md
    from mmtlalign.benchmark.report import compact_lines
    assert any(line.startswith('share MAE area (lower is better)')
               for line in compact_lines(res)), compact_lines(res)
    mean = res['evaluation']['curves']['tlalign']['label_fidelity']['mean']
    assert mean['rules'] == ['area', 'TransMix', 'TL-Align']
    assert len(mean['content']) == len(mean['shares']['TL-Align']) > 0
    with Image.open(osp.join(work, 'results.png')) as im:
        assert im.size[1] > 800
    # the scatter: one panel per rule, a point cloud per arm with its seeds' points
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mmtlalign.benchmark.plots import arm_colors, evaluation_panels
    panels = evaluation_panels(res, arm_colors(list(res['arms'])))
    assert len(panels) == 3
    fig, axes = plt.subplots(1, 3)
    for ax, draw in zip(axes, panels):
        draw(ax)
        assert [len(c.get_offsets()) for c in ax.collections] == [len(mean['content'])] * 2
    assert axes[2].get_title() == 'label_fidelity: TL-Align label vs content'
    plt.close(fig)
