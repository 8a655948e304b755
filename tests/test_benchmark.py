"""tools/benchmark.py: suites, statistics, cluster commands, and tiny suites run end to end.

The end-to-end tests run a suite of the demo configs on small Fashion-MNIST idx files written
here (real format, see test_demo.py) through tools/benchmark.py, which trains every cell with
tools/train.py (real mmengine Runner). Their outputs are checked against each cell's own
``vis_data/scalars.json``, read here independently of the package.
"""
import glob
import itertools
import json
import math
import os
import os.path as osp
import shlex
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.legend import Legend
from matplotlib.text import Text
from PIL import Image

from mmtlalign.benchmark import load_suite, paired_difference, plots, report, stats
from mmtlalign.benchmark.cells import Cell, plan_cells
from mmtlalign.errors import UserInputError

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')
BENCHMARK = osp.join(ROOT, 'tools', 'benchmark.py')


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------
def test_t_quantile_matches_the_table():
    for df, value in stats.T975.items():
        assert stats.t_quantile(0.975, df) == pytest.approx(value, abs=6e-4)
    assert stats.t_quantile(0.975, 30) == pytest.approx(2.042, abs=6e-4)
    assert stats.t_quantile(0.975, 10 ** 6) == pytest.approx(1.960, abs=1e-3)  # the normal
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=6e-4)
    assert stats.t_cdf(stats.t_quantile(0.9, 7), 7) == pytest.approx(0.9, abs=1e-9)


def test_paired_interval_by_hand():
    arm = {0: 81.20, 1: 80.10, 2: 82.05, 7: 70.0}  # seed 7 has no partner: not paired
    base = {0: 80.00, 1: 80.40, 2: 80.95}
    out = paired_difference(arm, base)
    # by hand: d = (1.20, -0.30, 1.10); mean 2/3; sd = sqrt(((.5333)^2 + (.9667)^2 +
    # (.4333)^2) / 2) = 0.83865; half width = 4.303 * 0.83865 / sqrt(3) = 2.0835
    assert out['seeds'] == [0, 1, 2] and out['n'] == 3
    assert out['diffs'] == pytest.approx([1.20, -0.30, 1.10])
    assert out['mean'] == pytest.approx(2 / 3)
    assert out['std'] == pytest.approx(0.83865, abs=1e-5)
    assert out['ci'] == pytest.approx([2 / 3 - 2.0835, 2 / 3 + 2.0835], abs=2e-3)
    assert out['excludes_zero'] is False
    # a consistent gain: every seed +1.0 +- 0.1 -> the interval excludes 0
    tight = paired_difference({0: 81.0, 1: 81.1, 2: 80.9}, {0: 80.0, 1: 80.0, 2: 80.0})
    assert tight['excludes_zero'] is True and tight['ci'][0] > 0
    # one pair: no interval, no verdict
    one = paired_difference({0: 81.0}, {0: 80.0})
    assert one['ci'] is None and one['excludes_zero'] is None


def test_verdict_names_only_differences_beyond_the_noise():
    from mmtlalign.benchmark import verdict

    def comp(label, arm, base):
        return dict(metric='top-1', label=label, **paired_difference(arm, base))
    base = {0: 80.0, 1: 80.0, 2: 80.0}
    real = comp('TL-Align - CutMix', {0: 81.0, 1: 81.1, 2: 80.9}, base)  # +1.0 +- 0.1
    noise = comp('TransMix - CutMix', {0: 80.5, 1: 79.1, 2: 80.9}, base)  # +0.17 +- 0.95
    results = dict(metrics=[dict(name='top-1')], comparisons=[real, noise])
    line = verdict(results)
    assert 'TL-Align is above CutMix beyond the seed noise' in line
    assert 'TransMix is' not in line and 'the rest is within it' in line
    assert '+1.00 [+0.75, +1.25]' in line  # mean [CI] of the real one, by hand: t=4.303*.1/√3
    results['comparisons'] = [noise]
    line = verdict(results)
    assert 'no difference exceeds the seed noise' in line and 'above' not in line
    one = comp('TL-Align - CutMix', {0: 90.0}, {0: 80.0})  # one seed: no interval, no winner
    assert 'no verdict' in verdict(dict(metrics=[dict(name='top-1')], comparisons=[one]))


# ------------------------------------------------------------------------------------------
# suites
# ------------------------------------------------------------------------------------------
def test_shipped_suites_load():
    fm = load_suite('fmnist')
    assert [a.name for a in fm.arms] == ['cutmix', 'tlalign', 'transmix', 'tlalign-dense',
                                         'origin-dense', 'mixpro', 'maskmix', 'smmix',
                                         'tokenmix', 'tlalign-maskmix', 'tlalign-tokenmix']
    assert fm.seeds == [0, 1, 2]
    assert ('tlalign', 'cutmix') in fm.comparisons and ('tlalign', 'transmix') in fm.comparisons
    swin = load_suite('imagenet_swin-t')
    assert [a.name for a in swin.arms] == ['cutmix', 'tlalign', 'tlalign-dense', 'origin-dense',
                                           'maskmix', 'tokenmix', 'tlalign-maskmix',
                                           'tlalign-tokenmix']
    assert swin.arm('cutmix').reference == dict(paper=81.2, mmpretrain=81.18)
    down = load_suite('downstream_swin-t')
    assert [s.name for s in down.downstream] == ['ade20k', 'coco']
    assert [m.name for m in down.metrics if m.stage in ('train', 'ade20k', 'coco')] == [
        'top-1', 'ADE20K mIoU', 'COCO box AP', 'COCO mask AP']  # (+ evaluation stages)
    deit = osp.join(ROOT, 'configs', 'benchmarks', 'imagenet_deit-s.py')
    if osp.isfile(osp.join(ROOT, 'configs', 'tlalign', 'deit-s_8xb128_deit.py')):
        d = load_suite(deit)
        assert [a.name for a in d.arms] == ['deit', 'cutmix', 'transmix', 'tlalign',
                                            'tlalign-dense', 'origin-dense', 'mixpro',
                                            'maskmix', 'smmix', 'tokenmix', 'tlalign-maskmix',
                                            'tlalign-tokenmix']
    # --arms / --seeds
    sub = load_suite('fmnist', arms=['cutmix', 'tlalign'], seeds=[3, 4])
    assert sub.seeds == [3, 4] and sub.comparisons == [('tlalign', 'cutmix')]


def write_suite(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def test_bad_suites_name_the_problem(tmp_path):
    arms = (f"arms = [dict(name='a', config={osp.join(DEMO, 'fmnist_vit_cutmix.py')!r}), "
            f"dict(name='b', config={osp.join(DEMO, 'fmnist_vit_tlalign.py')!r}, "
            "baseline={base!r})]\n")
    with pytest.raises(UserInputError, match="baseline 'z', which is not an arm"):
        load_suite(write_suite(tmp_path / 's1.py', arms.format(base='z')))
    with pytest.raises(UserInputError, match='--arms c: not in suite'):
        load_suite(write_suite(tmp_path / 's2.py', arms.format(base='a')), arms=['c'])
    with pytest.raises(UserInputError, match="config 'nowhere.py' does not exist"):
        load_suite(write_suite(tmp_path / 's3.py', "arms = [dict(name='a', config='nowhere.py')]"))
    with pytest.raises(UserInputError, match='cannot carry dicts'):
        load_suite(write_suite(tmp_path / 's4.py', arms.format(base='a') +
                               "cfg_options = {'model.align': dict(type='TransMixLabel')}"))
    with pytest.raises(UserInputError, match='seeds must be distinct'):
        load_suite(write_suite(tmp_path / 's5.py', arms.format(base='a')), seeds=[1, 1])
    with pytest.raises(UserInputError, match="suite 'nope' does not exist; .*fmnist"):
        load_suite('nope')


# ------------------------------------------------------------------------------------------
# commands for a cluster
# ------------------------------------------------------------------------------------------
def dry_run(capsys, *args):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import benchmark
    assert benchmark.main([*args, '--dry-run']) is None
    return [line for line in capsys.readouterr().out.splitlines() if 'train.sh' in line]


def train_py_args(line):
    """The tools/train.py arguments of a printed command, as the launcher script hands them
    over: dist_train.sh CONFIG GPUS ARGS -> CONFIG ARGS; slurm_train.sh PARTITION JOB CONFIG
    WORK_DIR ARGS -> CONFIG --work-dir=WORK_DIR ARGS."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import train
    argv = shlex.split(line)
    if 'tools/dist_train.sh' in argv:
        i = argv.index('tools/dist_train.sh')
        return train.parse_args([argv[i + 1], *argv[i + 3:]])
    i = argv.index('tools/slurm_train.sh')
    return train.parse_args([argv[i + 3], f'--work-dir={argv[i + 4]}', *argv[i + 5:]])


def test_dry_run_torchrun_and_slurm_commands(tmp_path, capsys):
    work = str(tmp_path / 'w')
    lines = dry_run(capsys, 'imagenet_swin-t', '--arms', 'cutmix', 'tlalign', '--gpus', '8',
                    '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=100')
    assert len(lines) == 6  # 2 arms x 3 seeds
    for line, (arm, cfg, seed) in zip(lines, [(a, c, s) for s in (0, 1, 2) for a, c in (
            ('cutmix', 'swin-t_16xb64_cutmix.py'), ('tlalign', 'swin-t_16xb64.py'))]):
        assert line.startswith(f'bash tools/dist_train.sh configs/tlalign/{cfg} 8 '), line
        # what dist_train.sh hands to tools/train.py after CONFIG GPUS
        args = train_py_args(line)
        assert args.work_dir == osp.join(work, arm, f'seed{seed}')
        assert args.cfg_options == {'train_cfg.max_epochs': 100, 'randomness.seed': seed}
        assert args.resume is None

    # slurm: one sbatch job per cell (tests/test_slurm.py runs them on a real Slurm); the
    # dry run prints each sbatch command and its job script
    lines = dry_run(capsys, 'downstream_swin-t', '--launcher', 'slurm', '--partition', 'gpu',
                    '--gpus', '16', '--seeds', '0', '--arms', 'cutmix', 'tlalign',
                    '--work-dir', work)
    assert len(lines) == 6  # 2 arms x 1 seed x (ImageNet + ADE20K + COCO)
    first = lines[0]
    assert first.startswith('PYTHON=') and ' GPUS=16 GPUS_PER_NODE=8 ' in first, first
    assert ('tools/slurm_train.sh gpu cutmix-s0 ' + osp.join(
        ROOT, 'configs/tlalign/swin-t_16xb64_cutmix.py') + ' "$WORK" $RESUME') in first
    ade = next(line for line in lines if 'ade20k' in line and 'cutmix' in line)
    assert ade.endswith('model.backbone.init_cfg.checkpoint="$CKPT" || rc=$?'), ade
    assert 'upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py' in ade
    # the ADE20K cell starts from its ImageNet cell's last checkpoint, after that job
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import benchmark
    benchmark.main(['downstream_swin-t', '--launcher', 'slurm', '--partition', 'gpu',
                    '--gpus', '16', '--seeds', '0', '--arms', 'cutmix', 'tlalign',
                    '--work-dir', work, '--dry-run'])
    out = capsys.readouterr().out
    # (its last_checkpoint read by mmtlalign.workdir: one line naming a file inside that dir)
    assert f"last-checkpoint {osp.join(work, 'cutmix', 'seed0')})" in out
    assert "--dependency=afterok:<job of cutmix seed 0>" in out
    # 6 training jobs, an evaluation job per ImageNet cell after it, one report job after all
    assert out.count('sbatch --parsable') == 9 and '--gres=gpu:8 --nodes' not in out
    for name in ('cutmix-s0-eval', 'tlalign-s0-eval', 'downstream_swin-t-report'):
        assert f'--job-name={name} ' in out, name
    assert out.count('--dependency=afterany:') == 1
    assert '--ntasks=16 --nodes=2 --ntasks-per-node=8 --gres=gpu:8' in out

    with pytest.raises(SystemExit, match='--launcher slurm needs --partition'):
        dry_run(capsys, 'imagenet_swin-t', '--launcher', 'slurm')


# ------------------------------------------------------------------------------------------
# results.png as a person reads it
# ------------------------------------------------------------------------------------------
#: the metric families of the shipped fmnist suite: a unit and a meaning each
FAMILIES = {'top-1': 'accuracy', 'occlusion AUC': 'accuracy', 'shuffle 2x2 top-1': 'accuracy',
            'shuffle 4x4 top-1': 'accuracy', 'corruption error': 'error', 'ECE': 'ECE',
            'NLL': 'NLL'}
PERCENT = {m for m, f in FAMILIES.items() if f != 'NLL'}
MAIN_JOB_COLORS = {'cutmix': 'tab:blue', 'tlalign': 'tab:red', 'transmix': 'tab:green'}


def fmnist_results(tmp_path, seeds):
    """``results`` of the shipped fmnist suite (11 arms, 4 evaluation stages) through the real
    cells, ``aggregate`` and ``summarise``; each cell's numbers and curves are drawn at a real
    run's magnitudes, with spreads wide enough that two seeds' intervals pass 0 and 100, and
    reliability bins that hold one or two images."""
    suite = load_suite('fmnist', seeds=seeds)
    rng = np.random.default_rng(0)
    train = plan_cells(suite, str(tmp_path))
    for c in train:
        c.state, c.result = 'done', dict(metrics={'top-1': float(rng.uniform(40, 95))})
    evals = []
    edges = np.linspace(0, 1, 16).tolist()
    for c in train:
        for stage in suite.evaluation:
            top1 = rng.uniform(20, 90, 10).tolist()
            curves = dict(
                occlusion=dict(fraction=[i / 10 for i in range(10)],
                               top1=sorted(top1, reverse=True)),
                patch_shuffle=dict(grid=[2, 4], top1=top1[:2]),
                corruption=dict(severity=[1, 2, 3, 4, 5], error=sorted(rng.uniform(20, 80, 5))),
                calibration=dict(bins=dict(
                    edges=edges, count=[0, 1, 2] + [300] * 11 + [1],
                    confidence=[None] + [(a + b) / 2 for a, b in zip(edges[1:-1], edges[2:])],
                    accuracy=[None, 0.0, 1.0] + np.clip(
                        np.linspace(0.25, 0.95, 11) + rng.normal(0, 0.03, 11), 0, 1).tolist() +
                    [0.0])))[stage.kind]
            metrics = {m.name: float(rng.normal(0.95, 0.03) if m.name == 'NLL' else
                                     rng.uniform(5, 95)) for m in stage.metrics}
            evals.append(Cell(arm=c.arm, seed=c.seed, stage=stage.name, config=c.config,
                              work_dir=c.work_dir + '-eval', options={}, metrics=stage.metrics,
                              parent=c, state='done', result=dict(metrics=metrics, curves=curves)))
    results = report.aggregate(suite, train + evals, str(tmp_path))
    results['evaluation'] = report.summarise(suite, train + evals)
    return suite, results


def drawn_texts(fig):
    """Every text the figure draws: titles, labels, legend entries and the tick labels of the
    ticks inside the view (matplotlib keeps spare ticks around, undrawn)."""
    fig.canvas.draw()
    ticks, out = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for pool, locator in ((axis.majorTicks, axis.get_major_locator()),
                                  (axis.minorTicks, axis.get_minor_locator())):
                used = len(locator())
                for k, tick in enumerate(pool):
                    for label in (tick.label1, tick.label2):
                        ticks.add(label)
                        if (k < used and label.get_visible() and label.get_text().strip()
                                and lo - 1e-9 <= tick.get_loc() <= hi + 1e-9):
                            out.append(label)
    return out + [t for t in fig.findobj(Text) if t not in ticks and t.get_visible()
                  and t.get_text().strip()]


def test_results_png_reads_without_overlaps_one_family_per_axis_and_clipped_intervals(
        tmp_path):
    suite, results = fmnist_results(tmp_path, seeds=[0, 1])
    path = str(tmp_path / 'results.png')
    plots.plot(results, path)
    with Image.open(path) as im:  # 16 in wide at 110 dpi, as written
        assert im.size[0] == 1760
    fig = plots.figure(results)
    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    # (a hair inside each box: neighbouring tick labels may touch, not overlap)
    boxes = [(t, t.get_window_extent(renderer).shrunk(0.98, 0.9)) for t in texts]
    assert len(boxes) > 100
    overlaps = [(a.get_text(), b.get_text()) for (a, ba), (b, bb)
                in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    for legend in fig.findobj(Legend):
        own = set(legend.get_texts()) | {legend.get_title()}
        frame = legend.get_window_extent(renderer)
        overlaps += [('legend', t.get_text()) for t, b in boxes
                     if t not in own and frame.overlaps(b)]
    assert not overlaps, overlaps
    assert all(fig.bbox.contains(b.x0, b.y0) and fig.bbox.contains(b.x1, b.y1)
               for _, b in boxes), 'a text is cut off at the edge'

    # the paired differences: one axis per family, every metric on one axis
    drawn = {}
    for ax in fig.axes:
        metrics = {line.get_gid() for line in ax.get_lines() if line.get_gid() in FAMILIES}
        if metrics:
            assert len({FAMILIES[m] for m in metrics}) == 1, metrics
            for m in metrics:
                drawn.setdefault(m, []).append(ax)
    assert set(drawn) == set(FAMILIES) and all(len(v) == 1 for v in drawn.values())
    spans = {FAMILIES[m]: np.ptp(drawn[m][0].get_xlim()) for m in drawn}
    assert spans['NLL'] < spans['accuracy'] / 10  # NLL is not squashed onto the top-1 scale

    # every interval ends inside the metric's range (two seeds: t = 12.7 reaches far past it)
    seeds_ax = next(ax for ax in fig.axes if ax.get_ylabel().startswith('top-1'))
    ys = np.concatenate([line.get_ydata() for line in seeds_ax.get_lines()])
    assert ys.min() >= 0 and ys.max() <= 100
    assert ys.max() == 100 or ys.min() == 0  # some interval really was clipped
    for m, (ax, ) in drawn.items():
        if m in PERCENT:
            xs = np.concatenate([line.get_xdata() for line in ax.get_lines()
                                 if len(line.get_xdata()) and
                                 line.get_transform() == ax.transData])
            assert xs.min() >= -100 and xs.max() <= 100, m

    # one colour per arm, the same in every panel, and none that means anything else
    colors = plots.arm_colors([a.name for a in suite.arms])
    assert len({to_hex(c) for c in colors.values()}) == len(colors) == 11
    for name, color in MAIN_JOB_COLORS.items():  # as in the main job's curves.png
        assert to_hex(colors[name]) == to_hex(color)
    for name, color in colors.items():
        means = [line for line in seeds_ax.get_lines() if line.get_gid() == f'arm:{name}']
        assert means and all(to_hex(line.get_color()) == to_hex(color) for line in means)
    rows = list(dict.fromkeys(c['label'] for c in results['comparisons']))
    arm_of = {c['label']: c['arm'] for c in results['comparisons']}
    for m, (ax, ) in drawn.items():  # a difference in its arm's colour, whatever its CI
        for line in ax.get_lines():
            if line.get_gid() == m:
                row = rows[round(float(line.get_ydata()[0]))]
                assert to_hex(line.get_color()) == to_hex(colors[arm_of[row]]), (m, row)
    used = {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}
    allowed = {to_hex(c) for c in colors.values()} | {to_hex('k'), to_hex(plots.SEED_GREY)}
    assert used <= allowed, used - allowed

    # reliability: the bins of one or two images are not drawn
    rel = next(ax for ax in fig.axes if 'reliability' in ax.get_title())
    points = {(round(x, 6), round(y, 6)) for line in rel.get_lines()[1:]
              for x, y in zip(line.get_xdata(), line.get_ydata())}
    for conf, acc in ((0.1, 0.0), (0.1666667, 1.0), (0.9666667, 0.0)):
        assert not any(abs(x - conf) < 1e-4 and abs(y - acc) < 1e-6 for x, y in points)
    assert len(points) >= 11 * len(colors) - 1


# ------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------
def tiny_suite(tmp_path, epochs, n_train=64):
    """A 2-arm suite of the demo configs on tiny Fashion-MNIST idx files."""
    src, root = str(tmp_path / 'src'), str(tmp_path / 'fmnist')
    datagen.write_fmnist(src, n_train=n_train, n_test=32, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    options = {f'{loader}.dataset.data_root': root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_dataloader.dataset.indices': None, 'val_dataloader.dataset.indices':
                    None, 'train_dataloader.batch_size': 16, 'val_dataloader.batch_size': 32,
                    'train_cfg.max_epochs': epochs})
    text = f"""seeds = [0, 1]
arms = [
    dict(name='cutmix', label='CutMix', config={osp.join(DEMO, 'fmnist_vit_cutmix.py')!r}),
    dict(name='tlalign', label='TL-Align', config={osp.join(DEMO, 'fmnist_vit_tlalign.py')!r},
         baseline='cutmix', reference=dict(paper=80.6)),
]
cfg_options = {options!r}
"""
    return write_suite(tmp_path / 'tiny.py', text)


def benchmark(*args, timeout=600, **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, BENCHMARK, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def scalars_top1(cell_dir):
    """Last validation top-1 of a cell, straight from its newest scalars.json."""
    newest = sorted(glob.glob(osp.join(cell_dir, '*', 'vis_data', 'scalars.json')))[-1]
    with open(newest) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [d for d in lines if 'accuracy/top1' in d][-1]['accuracy/top1']


def run_dirs(work):
    return sorted(glob.glob(osp.join(work, '*', 'seed*', '2*')))


@pytest.mark.e2e
@pytest.mark.slow
def test_tiny_suite_writes_results_and_a_rerun_skips_every_cell(tmp_path):
    suite, work = tiny_suite(tmp_path, epochs=1), str(tmp_path / 'work')
    result = benchmark(suite, '--work-dir', work, '--jobs', '2', '--cfg-options',
                       'model.backbone.drop_rate=0.0')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert '4 cell(s)' in out and 'Verdict (top-1, 2 paired seeds, 95% CI)' in out, out

    # results.json: per seed from each cell's own scalars, mean/std/paired CI recomputed
    res = json.load(open(osp.join(work, 'results.json')))
    top1 = {(arm, seed): scalars_top1(osp.join(work, arm, f'seed{seed}'))
            for arm in ('cutmix', 'tlalign') for seed in (0, 1)}
    for arm in ('cutmix', 'tlalign'):
        m = res['arms'][arm]['metrics']['top-1']
        assert m['per_seed'] == {str(s): top1[arm, s] for s in (0, 1)}
        vals = [top1[arm, s] for s in (0, 1)]
        assert m['mean'] == pytest.approx(statistics.mean(vals))
        assert m['std'] == pytest.approx(statistics.stdev(vals))
    comp = res['comparisons'][0]
    diffs = [top1['tlalign', s] - top1['cutmix', s] for s in (0, 1)]
    half = 12.706 * statistics.stdev(diffs) / math.sqrt(2)
    assert (comp['arm'], comp['baseline']) == ('tlalign', 'cutmix')
    assert comp['diffs'] == pytest.approx(diffs)
    assert comp['ci'] == pytest.approx([statistics.mean(diffs) - half,
                                        statistics.mean(diffs) + half], abs=1e-2)
    # every cell's options reached its run: the seed and --cfg-options
    for arm in ('cutmix', 'tlalign'):
        cfg = glob.glob(osp.join(work, arm, 'seed1', '2*', 'vis_data', 'config.py'))[0]
        text = open(cfg).read()
        assert 'seed=1' in text and 'drop_rate=0.0' in text

    # results.md: one row per arm with its numbers, the reference, the verdict
    md = open(osp.join(work, 'results.md')).read()
    for arm, label in (('cutmix', 'CutMix'), ('tlalign', 'TL-Align')):
        m = res['arms'][arm]['metrics']['top-1']
        row = next(line for line in md.splitlines() if line.startswith(f'| {label} |'))
        assert f'{m["mean"]:.2f} ± {m["std"]:.2f}' in row
    row = next(line for line in md.splitlines() if line.startswith('| TL-Align |'))
    assert f'{comp["mean"]:+.2f} [{comp["ci"][0]:+.2f}, {comp["ci"][1]:+.2f}] vs CutMix' in row
    assert row.rstrip().endswith('| 80.6 |')
    assert res['verdict'] in md
    with Image.open(osp.join(work, 'results.png')) as im:
        assert im.size[0] >= 500 and np.asarray(im.convert('L')).std() > 10

    # a rerun skips every finished cell: no training process, same results
    before = run_dirs(work)
    again = benchmark(suite, '--work-dir', work, '--cfg-options',
                      'model.backbone.drop_rate=0.0')
    assert again.returncode == 0, again.stderr[-3000:]
    assert '4 finished, 0 to resume, 0 to run' in again.stdout
    assert again.stdout.count('finished earlier, skipped') == 4
    assert run_dirs(work) == before
    res2 = json.load(open(osp.join(work, 'results.json')))
    assert res2['arms'] == res['arms'] and res2['comparisons'] == res['comparisons']

    # other settings in the same work dir are refused, not mixed in
    other = benchmark(suite, '--work-dir', work)
    assert other.returncode != 0
    assert 'holds a run of cutmix seed 0 with other settings' in other.stderr
    assert "model.backbone.drop_rate: was 0.0, now None" in other.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_interrupted_cell_resumes(tmp_path):
    suite, work = tiny_suite(tmp_path, epochs=4, n_train=256), str(tmp_path / 'work')
    args = [suite, '--work-dir', work, '--arms', 'cutmix', '--seeds', '0']
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, BENCHMARK, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cell = osp.join(work, 'cutmix', 'seed0')
    deadline = time.time() + 300
    while not osp.isfile(osp.join(cell, 'last_checkpoint')) and time.time() < deadline:
        assert proc.poll() is None, 'the run ended before its first checkpoint'
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and its training process
    proc.wait()
    marker = json.load(open(osp.join(cell, 'benchmark_cell.json')))
    assert marker['status'] == 'running'  # killed mid-run
    assert not osp.isfile(osp.join(cell, 'epoch_4.pth'))

    result = benchmark(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '0 finished, 1 to resume, 0 to run' in result.stdout
    assert 'resuming from its last checkpoint' in result.stdout
    log = open(osp.join(cell, 'benchmark_output.log')).read()
    assert 'tools/train.py' in log and '--resume' in log
    # the resumed run continued the old one: its first training line is past epoch 1
    runs = sorted(glob.glob(osp.join(cell, '2*', 'vis_data', 'scalars.json')))
    assert len(runs) == 2
    with open(runs[-1]) as f:
        resumed = [json.loads(line) for line in f if line.strip()]
    assert min(d['epoch'] for d in resumed if 'loss' in d) >= 2
    assert [d['step'] for d in resumed if 'accuracy/top1' in d][-1] == 4
    res = json.load(open(osp.join(work, 'results.json')))
    assert res['arms']['cutmix']['metrics']['top-1']['per_seed'] == {'0': scalars_top1(cell)}
