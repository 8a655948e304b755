"""Evaluation stages: ImageNet robustness sets in their real on-disk layouts (written here,
tiny), the 200-class protocol of ImageNet-A/-R, computed perturbations, calibration against
torchmetrics, and the stages run by the benchmark runner on a tiny suite (rerun skips them).

The class lists are read here straight from timm's files (``timm/data/_info``), independently
of the package's reader.
"""
import glob
import json
import os
import os.path as osp
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from mmtlalign.errors import UserInputError

import datagen
from helpers import PY, ROOT, ok, run_tool

TIMM_INFO = None


def timm_lines(name):
    import timm
    path = osp.join(osp.dirname(timm.__file__), 'data', '_info', name)
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def write_images(folder, n, seed, size=36, ext='.JPEG'):
    """``n`` small RGB JPEG files in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3)).astype(np.uint8)
        Image.fromarray(img).save(osp.join(folder, f'img_{i}{ext}'), format='JPEG')


def make_layout(root, kind, per_class=2):
    """A tiny copy of a robustness set's published layout; returns ``{folder: expected label}``
    (ImageNet-1k index, from timm's lists)."""
    wnids = timm_lines('imagenet_synsets.txt')
    expected = {}
    if kind == 'v2':  # folders are the class indices
        for idx in (0, 417, 999):
            write_images(osp.join(root, str(idx)), per_class, idx, ext='.jpeg')
            expected[str(idx)] = idx
    elif kind in ('a', 'r'):
        subset = timm_lines(f'imagenet_{kind}_synsets.txt')
        for w in (subset[0], subset[77], subset[-1]):
            write_images(osp.join(root, w), per_class, len(expected), ext='.jpg')
            expected[w] = wnids.index(w)
    elif kind == 'sketch':
        for idx in (3, 500, 998):
            write_images(osp.join(root, wnids[idx]), per_class, idx)
            expected[wnids[idx]] = idx
    elif kind == 'c':
        for corruption in ('gaussian_noise', 'fog'):
            for severity in (1, 3):
                for idx in (1, 640):
                    folder = osp.join(root, corruption, str(severity), wnids[idx])
                    write_images(folder, per_class, idx + severity)
                    expected[f'{corruption}/{severity}/{wnids[idx]}'] = idx
    return expected


def build_dataset(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    import mmtlalign  # noqa: F401
    init_default_scope('mmpretrain')
    return DATASETS.build(cfg)


# ------------------------------------------------------------------------------------------
# datasets in their layouts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind,type_', [('v2', 'ImageNetV2'), ('a', 'ImageNetA'),
                                        ('r', 'ImageNetR'), ('sketch', 'ImageNetSketch'),
                                        ('c', 'ImageNetC')])
def test_robustness_sets_read_their_published_layouts(tmp_path, kind, type_):
    root = str(tmp_path / kind)
    expected = make_layout(root, kind)
    ds = build_dataset(dict(type=type_, data_root=root, pipeline=[]))
    assert len(ds) == 2 * len(expected)
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        folder = osp.relpath(osp.dirname(info['img_path']), root)
        assert info['gt_label'] == expected[folder], (folder, info)
        assert osp.isfile(info['img_path'])
        if kind == 'c':
            corruption, severity, _ = folder.split('/')
            assert (info['corruption'], info['severity']) == (corruption, int(severity))
    assert len(ds.metainfo['classes']) == 1000
    if kind in ('a', 'r'):  # the 200 classes, as timm's index file lists them
        assert ds.subset_indices == sorted(int(x) for x in timm_lines(f'imagenet_{kind}_'
                                                                       'indices.txt'))
        assert len(ds.subset_indices) == 200
        assert all(expected[f] in ds.subset_indices for f in expected)
    else:
        assert ds.subset_indices is None
    # loads through the real pipeline
    ds = build_dataset(dict(type=type_, data_root=root, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
    item = ds[0]
    assert tuple(item['inputs'].shape) == (3, 36, 36)


def test_imagenet_c_keeps_the_chosen_corruptions_and_severities(tmp_path):
    root = str(tmp_path / 'c')
    make_layout(root, 'c')
    ds = build_dataset(dict(type='ImageNetC', data_root=root, corruptions=['fog'],
                            severities=[3], pipeline=[]))
    assert set(ds.groups()) == {('fog', 3)} and len(ds) == 4
    with pytest.raises(UserInputError, match='no folder for corruption'):
        build_dataset(dict(type='ImageNetC', data_root=root, corruptions=['snow']))


def test_missing_or_wrong_sets_name_the_problem(tmp_path):
    from mmtlalign.datasets.imagenet_robustness import RobustnessSetMissing
    with pytest.raises(RobustnessSetMissing, match='ImageNet-A: no data at'):
        build_dataset(dict(type='ImageNetA', data_root=str(tmp_path / 'nowhere')))
    # ImageNet-A's folders are not ImageNet-R's classes (and v.v.): refused, not mis-scored
    root = str(tmp_path / 'a')
    make_layout(root, 'a')
    r_only = sorted(set(timm_lines('imagenet_r_synsets.txt')) -
                    set(timm_lines('imagenet_a_synsets.txt')))[0]
    write_images(osp.join(root, r_only), 1, 0)
    with pytest.raises(UserInputError, match=f"{r_only}.*not one of the set's 200"):
        build_dataset(dict(type='ImageNetA', data_root=root))
    v2 = str(tmp_path / 'v2')
    write_images(osp.join(v2, 'n01440764'), 1, 0)
    with pytest.raises(UserInputError, match='not a class index 0-999'):
        build_dataset(dict(type='ImageNetV2', data_root=v2))


def test_200_class_restriction_equals_scoring_the_200_logits_alone():
    """The A/R protocol: argmax over the subset's logits of a 1000-way output is the same
    prediction as a 200-way classifier made of those logits alone."""
    from mmtlalign.datasets.imagenet_robustness import subset_indices
    from mmtlalign.evaluation import top1
    gen = torch.Generator().manual_seed(0)
    for kind in ('a', 'r'):
        subset = subset_indices(kind)
        n = 7500
        labels = torch.tensor(subset)[torch.randint(0, 200, (n,), generator=gen)]
        logits = torch.randn(n, 1000, generator=gen)
        logits[torch.arange(n), labels] += 2.5  # a model that is often right ...
        others = torch.tensor(sorted(set(range(1000)) - set(subset)))
        logits[:, others[:50]] += 3.0  # ... but prefers 50 classes the set does not have
        restricted = top1(logits, labels, subset)
        alone = logits[:, subset]  # the 200 logits as a 200-class output
        label200 = torch.tensor([subset.index(int(y)) for y in labels])
        acc200 = float((alone.argmax(1) == label200).float().mean()) * 100
        over1000 = top1(logits, labels)
        print(f'ImageNet-{kind.upper()} check (n={n}): restricted to 200 classes {restricted:.2f}'
              f'%, 200 logits alone {acc200:.2f}%, over all 1000 logits {over1000:.2f}%')
        assert restricted == pytest.approx(acc200, abs=1e-9)
        assert over1000 < restricted - 10  # the 1000-way score is a different number


# ------------------------------------------------------------------------------------------
# perturbations and calibration
# ------------------------------------------------------------------------------------------
def batch(n=6, c=1, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 255, (n, c, size, size)).astype(np.uint8))


def test_occlusion_blanks_the_asked_share_of_tokens_deterministically():
    from mmtlalign.evaluation import perturbations as P
    images = batch(6, c=3)
    fill = torch.tensor([10, 20, 30], dtype=torch.uint8)
    out = P.occlude(images, 0.5, 7, list(range(6)), fill)
    for i in range(6):
        tokens = out[i].unfold(1, 7, 7).unfold(2, 7, 7)  # (C, 4, 4, 7, 7)
        blanked = (tokens == fill.view(3, 1, 1, 1, 1)).all(-1).all(-1).all(0)
        assert int(blanked.sum()) == 8  # half of the 16 tokens
        kept = ~blanked
        assert torch.equal(tokens[:, kept], images[i].unfold(1, 7, 7).unfold(2, 7, 7)[:, kept])
    # per image, not per batch: the same images in other batches get the same tokens
    again = torch.cat([P.occlude(images[:2], 0.5, 7, [0, 1], fill),
                       P.occlude(images[2:], 0.5, 7, [2, 3, 4, 5], fill)])
    assert torch.equal(out, again)
    assert not torch.equal(out, P.occlude(images, 0.5, 7, list(range(6)), fill, seed=1))
    assert torch.equal(P.occlude(images, 0.0, 7, list(range(6)), fill), images)


def test_patch_shuffle_permutes_blocks():
    from mmtlalign.evaluation import perturbations as P
    images = batch(4)
    out = P.patch_shuffle(images, 4, [0, 1, 2, 3])
    for i in range(4):
        blocks = lambda x: sorted(x.unfold(1, 7, 7).unfold(2, 7, 7).reshape(16, -1).tolist())  # noqa
        assert blocks(out[i]) == blocks(images[i])  # same blocks, other places
    assert not torch.equal(out, images)
    assert torch.equal(out, P.patch_shuffle(images, 4, [0, 1, 2, 3]))
    assert torch.equal(P.patch_shuffle(images, 1, [0, 1, 2, 3]), images)


@pytest.mark.parametrize('channels,size', [(1, 28), (3, 40)])
def test_corruptions_run_on_the_maintained_library_deterministically(channels, size):
    from mmtlalign.evaluation import perturbations as P
    images = batch(3, c=channels, size=size)
    for name in P.CORRUPTIONS:
        out = P.corrupt(images, name, 3, [0, 1, 2])
        assert out.shape == images.shape and out.dtype == torch.uint8, name
        assert (out.float() - images.float()).abs().mean() > 0.5, name
        split = torch.cat([P.corrupt(images[:1], name, 3, [0]),
                           P.corrupt(images[1:], name, 3, [1, 2])])
        assert torch.equal(out, split), f'{name} is not deterministic per image'
    mild = P.corrupt(images, 'gaussian_noise', 1, [0, 1, 2]).float()
    harsh = P.corrupt(images, 'gaussian_noise', 5, [0, 1, 2]).float()
    assert (harsh - images.float()).abs().mean() > (mild - images.float()).abs().mean()
    with pytest.raises(UserInputError, match='unknown corruption'):
        P.corrupt(images, 'rain', 1, [0, 1, 2])


def test_calibration_is_torchmetrics_ece_and_the_reliability_bins_agree():
    from torchmetrics.functional.classification import multiclass_calibration_error

    from mmtlalign.evaluation import calibration
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen) * 3
    labels = torch.randint(0, 10, (500,), generator=gen)
    labels[:250] = logits[:250].argmax(1)
    out = calibration(logits, labels)
    expected = multiclass_calibration_error(logits.softmax(1), labels, num_classes=10,
                                            n_bins=15, norm='l1')
    assert out['ece'] == pytest.approx(float(expected) * 100, abs=1e-4)
    bins = out['bins']
    by_hand = sum(n / 500 * abs(a - c) for n, a, c in zip(bins['count'], bins['accuracy'],
                                                            bins['confidence']) if n)
    assert out['ece'] == pytest.approx(by_hand * 100, abs=1e-3)
    nll = -torch.log_softmax(logits, 1)[torch.arange(500), labels].mean()
    assert out['nll'] == pytest.approx(float(nll), rel=1e-5)
    assert sum(bins['count']) == 500 and len(bins['count']) == 15


def test_mce_normalises_by_the_published_alexnet_errors():
    from mmtlalign.evaluation import ALEXNET_ERR, corruption_summary
    assert len(ALEXNET_ERR) == 15 and ALEXNET_ERR['gaussian_noise'] == 0.886428
    # a model with AlexNet's error everywhere has mCE 100
    acc = {c: {s: 100 * (1 - e) for s in range(1, 6)} for c, e in ALEXNET_ERR.items()}
    out = corruption_summary(acc)
    assert out['mce'] == pytest.approx(100.0)
    assert out['error'] == pytest.approx(100 * statistics.mean(ALEXNET_ERR.values()))
    # half AlexNet's error on one corruption: its CE is 50, the mean drops by 50/15
    acc['fog'] = {s: 100 * (1 - ALEXNET_ERR['fog'] / 2) for s in range(1, 6)}
    assert corruption_summary(acc)['mce'] == pytest.approx(100 - 50 / 15)
    del acc['fog'][5]  # not every severity: no normalised mCE
    assert corruption_summary(acc)['mce'] is None


# ------------------------------------------------------------------------------------------
# the stages on a real model, through tools/analysis/evaluate.py
# ------------------------------------------------------------------------------------------
IMAGENET_TINY = """
_base_ = {base!r}
model = dict(backbone=dict(in_channels=3), head=dict(num_classes=1000))
data_preprocessor = dict(_delete_=True, num_classes=1000, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(28, 28)),
                 dict(type='PackInputs')]
test_dataloader = dict(batch_size=4, dataset=dict(pipeline=test_pipeline))
"""


def imagenet_model(tmp_path):
    """A 1000-class tiny ViT config (the demo's, on RGB files) and a checkpoint of it whose
    head prefers 50 classes that ImageNet-A does not have."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    from mmtlalign.datasets.imagenet_robustness import subset_indices
    path = str(tmp_path / 'tiny_in1k.py')
    with open(path, 'w') as f:
        f.write(IMAGENET_TINY.format(base=osp.join(ROOT, 'configs', 'tlalign', 'demo',
                                                   'fmnist_vit_cutmix.py')))
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model_cfg = cfg.model.copy()
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    others = sorted(set(range(1000)) - set(subset_indices('a')))[:50]
    with torch.no_grad():
        model.head.layers.head.bias[others] += 5.0
    ckpt = str(tmp_path / 'tiny_in1k.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    return path, ckpt


@pytest.mark.slow
def test_robustness_stages_on_tiny_layouts(tmp_path):
    from mmengine.config import Config

    from mmtlalign.datasets.imagenet_robustness import subset_indices
    from mmtlalign.evaluation.cli import evaluate
    from mmtlalign.evaluation.evaluator import Evaluator
    config, ckpt = imagenet_model(tmp_path)
    roots = {}
    for kind in ('v2', 'a', 'r', 'sketch', 'c'):
        roots[kind] = str(tmp_path / kind)
        make_layout(roots[kind], kind)
    specs = [dict(kind='imagenet_v2', data_root=roots['v2']),
             dict(kind='imagenet_a', data_root=roots['a']),
             dict(kind='imagenet_r', data_root=roots['r']),
             dict(kind='imagenet_sketch', data_root=roots['sketch']),
             dict(kind='imagenet_c', data_root=roots['c']),
             dict(kind='imagenet_a', name='imagenet_a_elsewhere',
                  data_root=str(tmp_path / 'missing'))]
    lines = []
    work = str(tmp_path / 'eval')
    results = evaluate(config, ckpt, specs, work, echo=lines.append)
    assert results['imagenet_a_elsewhere']['status'] == 'missing'
    assert sum('skipped, not scored' in line for line in lines) == 1
    # the numbers, recomputed here: the model's logits on each set's images
    ev = Evaluator(Config.fromfile(config), ckpt)
    for kind, stage in (('v2', 'imagenet_v2'), ('a', 'imagenet_a'), ('r', 'imagenet_r'),
                        ('sketch', 'imagenet_sketch')):
        out = ev.predict(dataset=dict(type={'v2': 'ImageNetV2', 'a': 'ImageNetA',
                                            'r': 'ImageNetR', 'sketch': 'ImageNetSketch'}[kind],
                                      data_root=roots[kind]))
        logits, labels = out['logits'], out['labels']
        if kind in ('a', 'r'):
            sub = subset_indices(kind)
            label200 = torch.tensor([sub.index(int(y)) for y in labels])
            want = float((logits[:, sub].argmax(1) == label200).float().mean()) * 100
            over1000 = float((logits.argmax(1) == labels).float().mean()) * 100
            assert results[stage]['curves']['top1_over_1000_logits'] == pytest.approx(over1000)
            assert results[stage]['curves']['num_classes_scored'] == 200
            print(f'{stage} on the tiny layout: {want:.2f}% over its 200 logits (stage: '
                  f'{list(results[stage]["metrics"].values())[0]:.2f}%), {over1000:.2f}% over '
                  'all 1000')
        else:
            want = float((logits.argmax(1) == labels).float().mean()) * 100
        label = results[stage]['metrics']
        assert list(label.values())[0] == pytest.approx(want), stage
        assert results[stage]['num_images'] == len(labels) == 6
    c = results['imagenet_c']
    assert set(c['curves']['top1']) == {'gaussian_noise', 'fog'}
    assert c['curves']['severity'] == [1, 3]
    assert c['metrics']['ImageNet-C mCE'] is None  # 2 of 15 corruptions: not normalised
    assert 0 <= c['metrics']['ImageNet-C mCE (unnorm.)'] <= 100
    # a rerun skips what is finished
    lines = []
    evaluate(config, ckpt, specs[:2], work, echo=lines.append)
    assert all('finished earlier, skipped' in line for line in lines), lines


# ------------------------------------------------------------------------------------------
# the stages in a benchmark suite
# ------------------------------------------------------------------------------------------
def test_suite_evaluation_entries_are_checked(tmp_path):
    from mmtlalign.benchmark import load_suite
    demo = osp.join(ROOT, 'configs', 'tlalign', 'demo')
    base = (f"arms = [dict(name='a', config={osp.join(demo, 'fmnist_vit_cutmix.py')!r}), "
            f"dict(name='b', config={osp.join(demo, 'fmnist_vit_tlalign.py')!r}, "
            "baseline='a')]\n")

    def suite(text):
        path = tmp_path / 's.py'
        path.write_text(base + text)
        return load_suite(str(path))
    s = suite("evaluation = [dict(kind='occlusion', fractions=[0.5]), 'calibration']\n")
    assert [m.name for m in s.metrics] == ['top-1', 'occlusion AUC', 'ECE', 'NLL']
    assert [m.stage for m in s.metrics] == ['train', 'occlusion', 'calibration', 'calibration']
    with pytest.raises(UserInputError, match="unknown evaluation stage kind 'blur'"):
        suite("evaluation = [dict(kind='blur')]\n")
    with pytest.raises(UserInputError, match="unknown parameter.*fraction"):
        suite("evaluation = [dict(kind='occlusion', fraction=0.5)]\n")
    with pytest.raises(UserInputError, match="names arms \\['z'\\]"):
        suite("evaluation = [dict(kind='occlusion', arms=['z'])]\n")
    with pytest.raises(UserInputError, match='names must be unique'):
        suite("evaluation = ['occlusion', 'occlusion']\n")
    # the shipped suites list their stages
    fm = load_suite('fmnist')
    assert [s.kind for s in fm.evaluation] == ['occlusion', 'patch_shuffle', 'corruption',
                                               'calibration']


def tiny_suite(tmp_path):
    src, root = str(tmp_path / 'src'), str(tmp_path / 'fmnist')
    datagen.write_fmnist(src, n_train=64, n_test=24, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    demo = osp.join(ROOT, 'configs', 'tlalign', 'demo')
    options = {f'{loader}.dataset.data_root': root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_cfg.max_epochs': 1, 'train_dataloader.batch_size': 16,
                    'train_dataloader.dataset.indices': None,
                    'val_dataloader.dataset.indices': None,
                    'test_dataloader.dataset.indices': None,
                    'param_scheduler.0.end': 0.25, 'param_scheduler.1.begin': 0.25})
    text = f"""
seeds = [0, 1]
arms = [dict(name='cutmix', label='CutMix', config={osp.join(demo, 'fmnist_vit_cutmix.py')!r}),
        dict(name='tlalign', label='TL-Align',
             config={osp.join(demo, 'fmnist_vit_tlalign.py')!r}, baseline='cutmix')]
cfg_options = {options!r}
evaluation = [
    dict(kind='occlusion', fractions=[0.25, 0.5]),
    dict(kind='patch_shuffle', grids=[2]),
    dict(kind='corruption', corruptions=['gaussian_noise', 'glass_blur'], severities=[1, 3],
         num_images=8),
    dict(kind='calibration'),
    dict(kind='imagenet_a', data_root={str(tmp_path / 'no-imagenet-a')!r}),
]
"""
    path = tmp_path / 'tiny.py'
    path.write_text(text)
    return str(path)


@pytest.mark.e2e
@pytest.mark.slow
def test_stages_run_through_the_benchmark_and_a_rerun_skips_them(tmp_path):
    suite, work = tiny_suite(tmp_path), str(tmp_path / 'work')
    bench = osp.join(ROOT, 'tools', 'benchmark.py')
    out = ok(run_tool([PY, bench, suite, '--work-dir', work, '--jobs', '2']))
    # the missing set: reported once, never scored
    assert out.count('imagenet_a: skipped for every cell, not scored') == 1, out
    assert 'ImageNet-A top-1' not in out
    res = json.load(open(osp.join(work, 'results.json')))
    assert 'ImageNet-A top-1' not in res['arms']['cutmix']['metrics']
    assert res['evaluation']['skipped'].keys() == {'imagenet_a'}
    # per seed: each cell's own stage file; paired Δ and CI recomputed from those
    names = ['occlusion AUC', 'shuffle 2x2 top-1', 'corruption error', 'ECE', 'NLL']
    files = {'occlusion AUC': 'occlusion', 'shuffle 2x2 top-1': 'patch_shuffle',
             'corruption error': 'corruption', 'ECE': 'calibration', 'NLL': 'calibration'}
    value = {}
    for arm in ('cutmix', 'tlalign'):
        for seed in (0, 1):
            for n in names:
                path = osp.join(work, arm, f'seed{seed}', 'evaluation', files[n] + '.json')
                data = json.load(open(path))
                assert data['status'] == 'done' and data['num_images'] == (
                    8 if n == 'corruption error' else 24)
                value[arm, seed, n] = data['metrics'][n]
    for n in names:
        for arm in ('cutmix', 'tlalign'):
            m = res['arms'][arm]['metrics'][n]
            assert m['per_seed'] == {str(s): value[arm, s, n] for s in (0, 1)}
        comp = next(c for c in res['comparisons'] if c['metric'] == n)
        diffs = [value['tlalign', s, n] - value['cutmix', s, n] for s in (0, 1)]
        assert comp['diffs'] == pytest.approx(diffs)
        half = 12.706 * statistics.stdev(diffs) / 2 ** 0.5
        assert comp['ci'] == pytest.approx([statistics.mean(diffs) - half,
                                            statistics.mean(diffs) + half], abs=1e-2)
    # curves for the plots: occlusion's starts at the clean top-1 of the cell
    curve = res['evaluation']['curves']['tlalign']['occlusion']
    assert curve['mean']['x'] == [0.0, 0.25, 0.5]
    assert len(curve['per_seed']) == 2
    md = open(osp.join(work, 'results.md')).read()
    assert '## occlusion AUC (occlusion)' in md and '## ECE (calibration)' in md
    with Image.open(osp.join(work, 'results.png')) as im:
        assert im.size[1] > 800 and np.asarray(im.convert('L')).std() > 10

    # a rerun: every training cell and every stage skipped, no evaluation process
    logs = sorted(glob.glob(osp.join(work, '*', 'seed*', 'evaluation', 'evaluate_output.log')))
    before = {p: os.path.getsize(p) for p in logs}
    again = ok(run_tool([PY, bench, suite, '--work-dir', work]))
    assert 'evaluation: 4 stage(s) x 4 cell(s): 16 finished, 0 to run' in again, again
    assert {p: os.path.getsize(p) for p in logs} == before
    res2 = json.load(open(osp.join(work, 'results.json')))
    assert res2['arms'] == res['arms']
    # one stage file gone: only that stage runs again, in that cell
    os.remove(osp.join(work, 'cutmix', 'seed1', 'evaluation', 'calibration.json'))
    third = ok(run_tool([PY, bench, suite, '--work-dir', work]))
    assert '15 finished, 1 to run in 1 process(es)' in third, third
    assert json.load(open(osp.join(work, 'results.json')))['arms'] == res['arms']


# ------------------------------------------------------------------------------------------
# transfer: a cell's checkpoint fine-tuned on a transfer dataset
# ------------------------------------------------------------------------------------------
TRANSFER = osp.join(ROOT, 'configs', 'tlalign', 'transfer')


def deit_s_cell_checkpoint(path):
    """What an ImageNet cell of imagenet_deit-s.py leaves: the TL-Align DeiT-S classifier's
    state dict (random weights here)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'tlalign', 'deit-s_8xb128.py'))
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return {k[len('backbone.'):]: v for k, v in model.state_dict().items()
            if k.startswith('backbone.')}


def make_pets(root, n_train=4, n_test=2):
    """mmpretrain's Oxford-IIIT Pets layout: images/<Breed>_<i>.jpg and annotations/{trainval,
    test}.txt with "name class species breed_id" lines (class 1-37)."""
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (('trainval', n_train), ('test', n_test)):
        lines = []
        for i in range(n):
            name = f'{split}_Abyssinian_{i}'
            img = rng.integers(0, 255, (48, 64, 3)).astype(np.uint8)
            os.makedirs(osp.join(root, 'images'), exist_ok=True)
            Image.fromarray(img).save(osp.join(root, 'images', name + '.jpg'))
            lines.append(f'{name} {1 + i % 37} 1 1')
        with open(osp.join(root, 'annotations', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


def test_transfer_configs_load_a_cells_backbone(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmtlalign.benchmark import load_suite
    ckpt = str(tmp_path / 'cell.pth')
    want = deit_s_cell_checkpoint(ckpt)
    for name, classes in (('deit-s_ft-cifar100.py', 100), ('deit-s_ft-pets.py', 37)):
        cfg = Config.fromfile(osp.join(TRANSFER, name))
        cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': ckpt})
        init_default_scope('mmpretrain')
        model = MODELS.build(cfg.model)
        model.init_weights()
        got = model.backbone.state_dict()
        assert got.keys() == want.keys()  # every backbone weight of the cell, nothing else
        assert all(torch.equal(got[k], want[k]) for k in want), name
        assert model.head.num_classes == classes
    suite = load_suite('transfer_deit-s')
    stage = suite.downstream[0]
    assert stage.name == 'cifar100' and stage.checkpoint_key == 'model.backbone.init_cfg.checkpoint'
    assert [m.name for m in suite.metrics][:2] == ['top-1', 'CIFAR-100 top-1']


@pytest.mark.slow
def test_transfer_fine_tunes_on_a_tiny_pets_layout(tmp_path):
    ckpt = str(tmp_path / 'cell.pth')
    deit_s_cell_checkpoint(ckpt)
    data = make_pets(str(tmp_path / 'pets'))
    work = str(tmp_path / 'ft')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools', 'train.py'),
                       osp.join(TRANSFER, 'deit-s_ft-pets.py'), '--work-dir', work,
                       '--cfg-options', f'model.backbone.init_cfg.checkpoint={ckpt}',
                       f'train_dataloader.dataset.data_root={data}',
                       f'val_dataloader.dataset.data_root={data}',
                       f'test_dataloader.dataset.data_root={data}',
                       'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
                       'val_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                       'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
                       'train_dataloader.persistent_workers=False',
                       'val_dataloader.persistent_workers=False',
                       'test_dataloader.persistent_workers=False']))
    assert ckpt in out  # the backbone came from the cell's checkpoint
    scalars = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))[0]
    lines = [json.loads(line) for line in open(scalars) if line.strip()]
    assert any('accuracy/top1' in d for d in lines)
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
