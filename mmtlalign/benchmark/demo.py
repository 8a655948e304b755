"""The main job (``tools/run_demo.sh`` -> ``tools/demo.py``): an embedded suite on real
Fashion-MNIST, by default the canvas suite ``configs/benchmarks/fmnist_canvas.py`` (garments on
a 56x56 canvas, where the label rules differ; its label_fidelity stage measures them), with
``--suite fmnist`` the fast 28x28 suite ``configs/benchmarks/fmnist.py``; then token-fluctuation
analysis, curves, the table and a verdict that only names a difference the seeds support.

Everything runs through the benchmark runner (:func:`run_suite`: one ``tools/train.py`` process
per arm × seed, finished cells skipped, interrupted ones resumed) and
``tools/analysis/token_fluctuation.py``.
"""
import math
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np
import torch

from .. import workdir
from ..cli.cfg_options import option_args
from ..datasets import FashionMNISTError, prepare_fashion_mnist
from ..errors import UserInputError
from ..paths import config_path, project_root, tool_path
from .launch import Launcher
from .metrics import history
from .plots import arm_colors
from .report import evaluation_report, table_rows, text_table, write_json
from .runner import fmt_time, run_suite
from .suite import load_suite

#: the main job's suites by tools/demo.py's --suite: the canvas suite (the default; CutMix
#: against TL-Align, every label rule judged by label_fidelity on every model) and the fast one
SUITES = dict(canvas=config_path('benchmarks', 'fmnist_canvas.py'),
              fmnist=config_path('benchmarks', 'fmnist.py'))
SUITE = SUITES['canvas']
#: the arms of SUITE the main job runs unless --arms names others (tools/demo.py's default)
MAIN_JOB_ARMS = ('cutmix', 'tlalign')
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def say(msg=''):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def fmnist_options(root, subset, val_subset):
    """cfg-options pointing the demo configs at the prepared files and the subsets."""
    opts = {}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts[f'{loader}.dataset.data_root'] = root
    opts['train_dataloader.dataset.indices'] = subset or None
    opts['val_dataloader.dataset.indices'] = val_subset or None
    opts['test_dataloader.dataset.indices'] = val_subset or None
    return opts


def count_samples(root, split):
    """Images of ``split`` in an ImageNet-layout folder (meta file lines, else files)."""
    meta = osp.join(root, 'meta', f'{split}.txt')
    if osp.isfile(meta):
        with open(meta) as f:
            return sum(1 for line in f if line.strip())
    n = 0
    for _, _, files in os.walk(osp.join(root, split)):
        n += sum(1 for f in files if f.lower().endswith(IMG_EXTENSIONS))
    return n


def folder_config(data, arm_config, work_dir, img_size, subset, val_subset, seed=0):
    """Write a config for ``--data``: the demo arm, with the user's folder as the data.

    Returns (path, number of classes, {split: dict(n=images used)}).
    """
    root = osp.abspath(data)
    train_dir = osp.join(root, 'train')
    if not osp.isdir(train_dir):
        raise UserInputError(f'--data {data}: no train/ folder (expected the ImageNet layout '
                             'train/<class>/*.jpg and val/<class>/*.jpg or meta/val.txt)')
    classes = sorted(d for d in os.listdir(train_dir) if osp.isdir(osp.join(train_dir, d)))
    if len(classes) < 2:
        raise UserInputError(f'--data {data}: train/ needs one sub-folder per class '
                             f'(found {len(classes)}).')
    if not osp.isdir(osp.join(root, 'val')):
        raise UserInputError(f'--data {data}: no val/ folder to validate on.')
    rng = np.random.default_rng(seed)
    split_cfg = {}
    for split, limit in (('train', subset), ('val', val_subset)):
        n = count_samples(root, split)
        if n == 0:
            raise UserInputError(f'--data {data}: no images found in {split}/.')
        indices = None
        if limit and limit < n:  # folders are sorted by class: take a random subset
            indices = sorted(int(i) for i in rng.choice(n, limit, replace=False))
        ann = f'meta/{split}.txt' if osp.isfile(osp.join(root, 'meta', f'{split}.txt')) else ''
        split_cfg[split] = dict(ann=ann, indices=indices, n=n if indices is None else limit)
    path = osp.join(work_dir, 'config.py')

    def dataset(split, pipeline):
        c = split_cfg[split]
        return (f"dict(_delete_=True, type='CustomDataset', data_root={root!r}, "
                f"data_prefix={split!r}, ann_file={c['ann']!r}, "
                f"metainfo=dict(classes={tuple(classes)!r}), indices={c['indices']!r}, "
                f'pipeline={pipeline})')

    size = img_size
    text = f"""# Written by tools/demo.py for --data {data}:
# the demo arm on an ImageNet-layout folder.
_base_ = {arm_config!r}
num_classes = {len(classes)}
model = dict(backbone=dict(img_size={size}, in_channels=3),
             head=dict(num_classes=num_classes))
data_preprocessor = dict(_delete_=True, num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale={size}, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale={size * 8 // 7}, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size={size}),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset={dataset('train', 'train_pipeline')})
val_dataloader = dict(dataset={dataset('val', 'test_pipeline')})
test_dataloader = val_dataloader
"""
    workdir.write_text(path, text)
    return path, len(classes), split_cfg


# ------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------
def analyse(cell, num_batches, options, seed):
    """tools/analysis/token_fluctuation.py on a finished cell's checkpoint; its summary."""
    ckpt = cell.result.get('checkpoint')
    if not num_batches or not ckpt:
        return None
    out_dir = osp.join(cell.work_dir, 'token_fluctuation')
    cmd = [sys.executable, tool_path('analysis', 'token_fluctuation.py'),
           cell.config, ckpt, '--out-dir', out_dir, '--num-batches', str(num_batches),
           '--batch-size', '64', '--seed', str(seed), '--cfg-options', *option_args(options)]
    env = dict(os.environ, PYTHONPATH=project_root())
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    workdir.write_text(osp.join(cell.work_dir, 'analysis_output.log'), proc.stdout + proc.stderr,
                       cell.root)
    if proc.returncode:
        say(f'  [{cell.name}] warning: the token-fluctuation analysis failed:\n' +
            proc.stderr[-2000:])
        return None
    return workdir.read_json(osp.join(out_dir, 'summary.json'), workdir.is_dict,
                             what='token-fluctuation summary')


def last_epoch_mean(train, key):
    """Mean of ``key`` over the training log lines of the last epoch (None if never logged)."""
    lines = [d for d in train if key in d]
    if not lines:
        return None
    last = lines[-1].get('epoch')
    vals = [d[key] for d in lines if d.get('epoch') == last]
    return sum(vals) / len(vals)


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def smooth(values, window=5):
    """Trailing moving average."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(suite, cells, analyses, path, title):
    """Validation top-1 (per seed and mean), training loss and token fluctuation of every arm."""
    # matplotlib here, not at the top: about a second to import, and only the plots need it
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = arm_colors([a.name for a in suite.arms])  # the same as in results.png
    for arm in suite.arms:
        color = colors[arm.name]
        runs = [history(c.work_dir) for c in cells if c.arm == arm.name and c.state == 'done']
        if not runs:
            continue
        # accuracy: thin line per seed, thick mean over seeds
        curves = [[(v['step'], v['accuracy/top1']) for v in val if 'accuracy/top1' in v]
                  for _, val in runs]
        for k, curve in enumerate(curves):
            axes[0].plot(*zip(*curve), '-', color=color, alpha=0.3, lw=1)
        n = min(len(c) for c in curves)
        if n:
            axes[0].plot([curves[0][i][0] for i in range(n)],
                         [np.mean([c[i][1] for c in curves]) for i in range(n)], 'o-',
                         color=color, label=f'{arm.label} (mean of {len(curves)} seeds)')
        # loss and token fluctuation: mean over seeds at each logged iteration
        trains = [train for train, _ in runs]
        m = min(len(t) for t in trains)
        it = [trains[0][i]['step'] for i in range(m)]
        loss = [np.mean([t[i]['loss'] for t in trains]) for i in range(m)]
        axes[1].plot(it, smooth(loss), '-', color=color, label=arm.label)
        fl = [np.mean([t[i].get('token_fluctuation', 0) for t in trains]) for i in range(m)]
        if any(fl):
            axes[2].plot(it, fl, '-', color=color, alpha=0.25, lw=1)
            axes[2].plot(it, smooth(fl), '-', color=color,
                         label=f'{arm.label} training targets: |rule share - area share|')
        summary = analyses.get(arm.name)
        if summary:
            axes[2].axhline(summary['mean_token_fluctuation'], color=color, ls='--', lw=1,
                            label=f'{arm.label} model on val, TL-Align traced')
    axes[0].set(xlabel='epoch', ylabel='test top-1 (%)', title='accuracy (thin: each seed)')
    axes[0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].set(xlabel='iteration', ylabel='training loss (mean over seeds)',
                title='loss (each arm against its own soft targets)')
    axes[2].set(xlabel='iteration', ylabel='mean |output share - area share|',
                title='token fluctuation')
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    workdir.write_figure(fig, path)
    plt.close(fig)


def demo_table(results, suite, cells, analyses):
    """The benchmark table of top-1 plus wall time per cell and token fluctuation."""
    head, rows = table_rows(results, results['metrics'][0])
    head = head[:4] + ['time/cell', 'token fluct. train', 'token fluct. val']
    out = []
    for arm, row in zip(suite.arms, rows):
        done = [c for c in cells if c.arm == arm.name and c.state == 'done']
        walls = [c.result['wall_s'] for c in done if c.result.get('wall_s')]
        fl = [last_epoch_mean(history(c.work_dir)[0], 'token_fluctuation') for c in done]
        fl = [v for v in fl if v is not None]
        train_fl = np.mean(fl) if fl and any(fl) else None
        val = analyses.get(arm.name)
        out.append(row[:4] + [fmt_time(np.mean(walls)) if walls else '-',
                              f'{train_fl:.3f}' if train_fl is not None else '- (area labels)',
                              f'{val["mean_token_fluctuation"]:.3f}' if val else '-'])
    return text_table(head, out)


def warmup_options(n_train, batch_size, epochs, warmup=0.3):
    """The demo's warm-up lasts 0.3 epoch (param_scheduler.0.end); on tiny data that would be
    0 steps (mmengine then refuses the schedule): make it at least one step."""
    steps = math.ceil(n_train / batch_size)
    if steps * epochs < 2:
        raise UserInputError(f'{n_train} training images at batch {batch_size} for {epochs} '
                             'epoch(s) is a single step: use more images, a smaller '
                             '--batch-size or more --epochs.')
    if int(warmup * steps) >= 1:
        return {}
    warmup = 1 / steps
    return {'param_scheduler.0.end': warmup, 'param_scheduler.1.begin': warmup}


def run_demo(args):
    """The main job; ``args`` from tools/demo.py. Returns the results dict."""
    start = time.time()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f'CPU ({os.cpu_count()} cores)'
    work_root = osp.abspath(args.work_dir)
    suite_name = getattr(args, 'suite', None) or ('fmnist' if args.data else 'canvas')
    suite = load_suite(SUITES[suite_name], arms=args.arms, seeds=args.seeds)
    options = {'train_cfg.max_epochs': args.epochs,
               'train_dataloader.batch_size': args.batch_size}
    if args.lr is not None:
        options['optim_wrapper.optimizer.lr'] = args.lr
    say(f'TL-Align demo on {device}; results in {work_root}')
    if args.data:
        suite.name = osp.basename(osp.normpath(args.data))  # the results' title: not fmnist
        for arm in suite.arms:
            arm.config, num_classes, splits = folder_config(
                args.data, arm.config, osp.join(work_root, 'configs', arm.name), args.img_size,
                args.subset, args.val_subset)
        n_train = splits['train']['n']
        dataset = (f'{args.data} ({num_classes} classes, {splits["train"]["n"]} training / '
                   f'{splits["val"]["n"]} validation images at {args.img_size}x{args.img_size})')
    else:
        try:
            root = prepare_fashion_mnist(args.fmnist_root, source=args.fmnist_source)
        except FashionMNISTError as e:
            raise UserInputError(str(e)) from e
        options.update(fmnist_options(root, args.subset, args.val_subset))
        n_train = args.subset or 60000
        dataset = (f'Fashion-MNIST ({args.subset or "all 60000"} training / '
                   f'{args.val_subset or "all 10000"} test images, 28x28' +
                   (', on a 56x56 canvas)' if suite_name == 'canvas' else ')'))
    options.update(warmup_options(n_train, args.batch_size, args.epochs))
    options.update(args.cfg_options or {})
    say(f'data: {dataset}; {args.epochs} epoch(s) per cell, batch {args.batch_size}; arms '
        f'{", ".join(a.label for a in suite.arms)} x seeds {suite.seeds}')

    # one cell per core: small models use a core badly with several threads (2x faster here)
    jobs = args.jobs or (1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1,
                                                                         len(suite.arms))))
    results, failed, cells = run_suite(suite, work_root, Launcher('local'), options, jobs=jobs,
                                       echo=say)
    if failed:
        raise UserInputError(f'{len(failed)} cell(s) failed: ' +
                             ', '.join(c.name for c in failed) + '; see their '
                             'benchmark_output.log, then run the same command again (finished '
                             'cells are kept).')
    cells = [c for c in cells if c.stage == 'train']  # the evaluation cells: in results
    analyses = {}
    for arm in suite.arms:  # the first seed of each arm: the plots show one model per arm
        cell = next(c for c in cells if c.arm == arm.name)
        if args.analysis_batches:
            say(f'  [{cell.name}] tracing token shares on {args.analysis_batches} mixed '
                'test batches ...')
        analyses[arm.name] = analyse(cell, args.analysis_batches, cell.options, suite.seeds[0])

    curves = osp.join(work_root, 'curves.png')
    plot_curves(suite, cells, analyses, curves,
                f'{" vs ".join(a.label for a in suite.arms)}: {dataset}, seeds {suite.seeds}')
    wall = time.time() - start
    results['demo'] = dict(device=device, dataset=dataset, epochs=args.epochs,
                           batch_size=args.batch_size, options=options, curves=curves,
                           wall_s=wall, analysis=analyses)
    write_json(results, results['files']['json'])

    say(f'\n== Results: {dataset}, {args.epochs} epoch(s), {device}, '
        f'{len(suite.seeds)} seed(s) per arm; {fmt_time(wall)} in all')
    say(demo_table(results, suite, cells, analyses))
    for c in results['comparisons']:
        if (results['arms'][c['arm']]['baseline'] != c['baseline'] and
                c['metric'] == results['metrics'][0]['name']):
            say(f'{c["label"]}: {c["mean"]:+.2f}' + (
                f' [{c["ci"][0]:+.2f}, {c["ci"][1]:+.2f}]' if c['ci'] else ''))
    say('per seed: test top-1 at the end of training; Δ: paired over seeds (same initial '
        'weights, data order and CutMix boxes), mean [95% CI].')
    say('token fluct.: mean |rule share - area share| of the training targets (last epoch), '
        'and TL-Align traced through each trained model on mixed test images.')
    say('\n' + results['verdict'])
    for line in evaluation_report(results):  # robustness and calibration stages
        say(line)
    say(f'\nplots:   {curves}, {results["files"]["png"]}')
    for arm in suite.arms:
        if analyses.get(arm.name):
            say(f'         {osp.dirname(analyses[arm.name]["files"]["share_maps"])}/'
                '{layer_drift,share_scatter,share_maps}.png')
    say(f'results: {results["files"]["json"]}, {results["files"]["md"]}')
    return results

