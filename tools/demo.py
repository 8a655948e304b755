"""The main job: TL-Align against the same-recipe CutMix baseline, on real data, in minutes.

    bash tools/run_demo.sh [options]        # sets up .venv first, then runs this
    python tools/demo.py [options]

Default: Fashion-MNIST (prepared on first use from Debian's ``dataset-fashion-mnist`` package,
else mmpretrain's download), a small DeiT-style ViT (patch 4 on 28x28, 6 blocks, 96 dims) from
``configs/tlalign/demo/``, the first 6,000 training images, 2,000 test images, 5 epochs, both
arms with the same seed (same initial weights, data order and CutMix boxes), each trained by
``tools/train.py``. Then each trained model is traced by
``tools/analysis/token_fluctuation.py``. It prints a table and writes to ``--work-dir``
(default ``work_dirs/demo``): ``curves.png`` (validation top-1, training loss and token
fluctuation of both arms), ``results.json``, and per arm the Runner's logs, checkpoint and the
analysis plots (``<arm>/token_fluctuation/*.png``).

Longer: ``--subset 0 --val-subset 0 --epochs 30`` (all 60,000/10,000 images). A GPU, when
present, is used by the Runner. ``--data PATH`` runs the same two arms on your own
ImageNet-layout folder (``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` or
``meta/{train,val}.txt``), resized to ``--img-size``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs', 'tlalign', 'demo')
ARMS = {
    'cutmix': ('CutMix', osp.join(CONFIG_DIR, 'fmnist_vit_cutmix.py')),
    'tlalign': ('TL-Align', osp.join(CONFIG_DIR, 'fmnist_vit_tlalign.py')),
}
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='TL-Align vs the same-recipe CutMix baseline: train both, compare, plot.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--epochs', type=int, default=5, help='training epochs of each arm')
    p.add_argument('--subset', type=int, default=6000,
                   help='training images used (0: all; Fashion-MNIST has 60,000)')
    p.add_argument('--val-subset', type=int, default=2000,
                   help='validation images used (0: all; Fashion-MNIST has 10,000)')
    p.add_argument('--batch-size', type=int, default=32, help='training batch size')
    p.add_argument('--lr', type=float, default=None,
                   help='AdamW learning rate (default: the config\'s, 1e-3)')
    p.add_argument('--seed', type=int, default=0, help='seed shared by both arms')
    p.add_argument('--arms', nargs='+', choices=list(ARMS), default=list(ARMS),
                   help='which arms to train')
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                   help='where logs, checkpoints, plots and results go')
    p.add_argument('--data', metavar='PATH',
                   help='your own ImageNet-layout folder instead of Fashion-MNIST')
    p.add_argument('--img-size', type=int, default=32,
                   help='with --data: images are resized/cropped to this size (a multiple of 4)')
    p.add_argument('--fmnist-root', default=None,
                   help='folder of the prepared Fashion-MNIST idx files (default: '
                   '$MMTLALIGN_CACHE/fashion-mnist, ~/.cache/mmtlalign/fashion-mnist)')
    p.add_argument('--fmnist-source', default=None,
                   help='folder holding the four Fashion-MNIST idx files (.gz or not) to '
                   'prepare from, instead of the Debian package')
    p.add_argument('--analysis-batches', type=int, default=4,
                   help='validation batches of 64 traced by the token-fluctuation analysis '
                   '(0: skip the analysis)')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='extra config overrides for both arms, key=value')
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error('--epochs must be >= 1')
    if args.subset < 0 or args.val_subset < 0:
        p.error('--subset and --val-subset must be >= 0 (0: all images)')
    if args.batch_size < 2:
        p.error('--batch-size must be >= 2 (CutMix pairs images within a batch)')
    if args.img_size % 4:
        p.error(f'--img-size must be a multiple of the patch size 4, got {args.img_size}')
    return args


def say(msg=''):
    print(msg, flush=True)


def fmt_time(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f'{m}m {s:02d}s' if m else f'{s}s'


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def fmnist_options(args, root):
    opts = [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            f'train_dataloader.dataset.indices={args.subset or None}',
            f'val_dataloader.dataset.indices={args.val_subset or None}',
            f'test_dataloader.dataset.indices={args.val_subset or None}']
    return opts


def count_samples(root, split):
    """Images of ``split`` in an ImageNet-layout folder (meta file lines, else files)."""
    meta = osp.join(root, 'meta', f'{split}.txt')
    if osp.isfile(meta):
        with open(meta) as f:
            return sum(1 for line in f if line.strip())
    n = 0
    for dirpath, _, files in os.walk(osp.join(root, split)):
        n += sum(1 for f in files if f.lower().endswith(IMG_EXTENSIONS))
    return n


def folder_config(args, arm_config, work_dir):
    """Write a config for ``--data``: the demo arm, with the user's folder as the data."""
    import numpy as np
    root = osp.abspath(args.data)
    train_dir = osp.join(root, 'train')
    if not osp.isdir(train_dir):
        sys.exit(f'error: --data {args.data}: no train/ folder (expected the ImageNet layout '
                 'train/<class>/*.jpg and val/<class>/*.jpg or meta/val.txt)')
    classes = sorted(d for d in os.listdir(train_dir) if osp.isdir(osp.join(train_dir, d)))
    if len(classes) < 2:
        sys.exit(f'error: --data {args.data}: train/ needs one sub-folder per class '
                 f'(found {len(classes)}).')
    if not osp.isdir(osp.join(root, 'val')):
        sys.exit(f'error: --data {args.data}: no val/ folder to validate on.')
    rng = np.random.default_rng(args.seed)
    split_cfg = {}
    for split, limit in (('train', args.subset), ('val', args.val_subset)):
        n = count_samples(root, split)
        if n == 0:
            sys.exit(f'error: --data {args.data}: no images found in {split}/.')
        indices = None
        if limit and limit < n:  # folders are sorted by class: take a random subset
            indices = sorted(int(i) for i in rng.choice(n, limit, replace=False))
        ann = f'meta/{split}.txt' if osp.isfile(osp.join(root, 'meta', f'{split}.txt')) else ''
        split_cfg[split] = dict(ann=ann, indices=indices, n=n if indices is None else limit)
    size = args.img_size
    path = osp.join(work_dir, 'config.py')
    os.makedirs(work_dir, exist_ok=True)

    def dataset(split, pipeline):
        c = split_cfg[split]
        return (f"dict(_delete_=True, type='CustomDataset', data_root={root!r}, "
                f"data_prefix={split!r}, ann_file={c['ann']!r}, "
                f"metainfo=dict(classes={tuple(classes)!r}), indices={c['indices']!r}, "
                f'pipeline={pipeline})')

    text = f"""# Written by tools/demo.py for --data {args.data}: the demo arm on an ImageNet-layout folder.
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
    with open(path, 'w') as f:
        f.write(text)
    return path, len(classes), split_cfg


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
TRAIN_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\].*?eta: (\S+).*?'
                        r'loss: ([\d.]+)(?:.*?token_fluctuation: ([\d.]+))?')
VAL_LINE = re.compile(r'Epoch\(val\)\s*\[(\d+)\].*?accuracy/top1: ([\d.]+)')


def run_logged(cmd, log_path, label, env):
    """Run ``cmd``, keep its full output in ``log_path`` and show compact progress."""
    tty = sys.stdout.isatty()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=os.getcwd(), bufsize=1)
        for line in proc.stdout:
            log.write(line)
            m = TRAIN_LINE.search(line)
            if m:
                ep, it, n, eta, loss, fl = m.groups()
                msg = (f'  [{label}] epoch {ep} iter {it}/{n}  loss {float(loss):.3f}' +
                       # the CutMix arm logs 0: its targets are the area labels
                       (f'  token fluct. {float(fl):.3f}' if fl and label == 'TL-Align' else '')
                       + f'  eta {eta}')
                if tty:
                    print('\r' + msg.ljust(78), end='', flush=True)
                elif int(it) == int(n) or int(it) // 10 % max(1, int(n) // 40) == 0:
                    print(msg, flush=True)  # logs and pipes: about 4 lines per epoch
                continue
            m = VAL_LINE.search(line)
            if m:
                print(('\r' if tty else '') + f'  [{label}] epoch {m.group(1)} validation '
                      f'top-1 {float(m.group(2)):.2f}%'.ljust(78), flush=True)
        proc.wait()
    return proc.returncode


def tail(path, n=30):
    with open(path) as f:
        return ''.join(f.readlines()[-n:])


def latest_run_dir(work_dir, since):
    runs = [d for d in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
            if osp.getmtime(d) >= since - 1]
    if not runs:
        return None
    return osp.dirname(osp.dirname(max(runs, key=osp.getmtime)))


def read_scalars(run_dir):
    train, val = [], []
    with open(osp.join(run_dir, 'vis_data', 'scalars.json')) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            if 'accuracy/top1' in d:
                val.append(d)
            elif 'loss' in d:
                train.append(d)
    return train, val


def train_arm(args, arm, config, options, work_dir, env):
    label = ARMS[arm][0]
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
           '--cfg-options', *options]
    os.makedirs(work_dir, exist_ok=True)
    log = osp.join(work_dir, 'train_output.log')
    say(f'\n== {label}: training ({args.epochs} epoch(s)) -- full log: {log}')
    say('   ' + ' '.join(osp.relpath(c) if c.startswith(ROOT) else c for c in cmd[1:]))
    start = time.time()
    rc = run_logged(cmd, log, label, env)
    wall = time.time() - start
    if rc:
        sys.stderr.write(tail(log))
        sys.exit(f'error: training the {label} arm failed (exit code {rc}); see {log}')
    run_dir = latest_run_dir(work_dir, start)
    if run_dir is None:
        sys.exit(f'error: no scalars.json was written under {work_dir}; see {log}')
    train, val = read_scalars(run_dir)
    ckpt_file = osp.join(work_dir, 'last_checkpoint')
    ckpt = open(ckpt_file).read().strip() if osp.isfile(ckpt_file) else None
    return dict(arm=arm, label=label, wall=wall, train=train, val=val, checkpoint=ckpt,
                run_dir=run_dir, log=log)


def analyse_arm(args, result, config, options, env):
    if not args.analysis_batches or not result['checkpoint']:
        return None
    out_dir = osp.join(osp.dirname(result['log']), 'token_fluctuation')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'token_fluctuation.py'), config,
           result['checkpoint'], '--out-dir', out_dir, '--num-batches',
           str(args.analysis_batches), '--batch-size', '64', '--seed', str(args.seed),
           '--cfg-options', *options]
    say(f'  [{result["label"]}] tracing token shares on {args.analysis_batches} mixed '
        f'validation batches ...')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    with open(osp.join(osp.dirname(result['log']), 'analysis_output.log'), 'w') as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        say(f'  [{result["label"]}] warning: the analysis failed:\n' + proc.stderr[-2000:])
        return None
    with open(osp.join(out_dir, 'summary.json')) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def last_epoch_mean(train, key):
    if not train or key not in train[-1]:
        return None
    last = train[-1]['epoch']
    vals = [d[key] for d in train if d.get('epoch') == last and key in d]
    return sum(vals) / len(vals) if vals else None


def table(results):
    head = ('arm', 'top-1 (%)', 'best top-1', 'wall time', 'token fluct. train',
            'token fluct. val')
    rows = []
    for r in results:
        top1 = [v['accuracy/top1'] for v in r['val']]
        train_fl = last_epoch_mean(r['train'], 'token_fluctuation') if r['arm'] == 'tlalign' \
            else None
        val_fl = r['analysis']['mean_token_fluctuation'] if r.get('analysis') else None
        rows.append((r['label'], f'{top1[-1]:.2f}' if top1 else '-',
                     f'{max(top1):.2f}' if top1 else '-', fmt_time(r['wall']),
                     f'{train_fl:.3f}' if train_fl is not None else '- (area labels)',
                     f'{val_fl:.3f}' if val_fl is not None else '-'))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: '  '.join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), '  '.join('-' * w for w in widths)] + [line(r) for r in rows]
    return '\n'.join(out)


def smooth(values, window=5):
    """Trailing moving average."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(results, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    colors = {'cutmix': 'tab:blue', 'tlalign': 'tab:red'}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for r in results:
        c = colors[r['arm']]
        if r['val']:
            axes[0].plot([v['step'] for v in r['val']], [v['accuracy/top1'] for v in r['val']],
                         'o-', color=c, label=r['label'])
        it = [d['step'] for d in r['train']]
        axes[1].plot(it, [d['loss'] for d in r['train']], '-', color=c, alpha=0.85,
                     label=r['label'])
        if r['arm'] == 'tlalign':
            fl = [d.get('token_fluctuation', 0) for d in r['train']]
            axes[2].plot(it, fl, '-', color=c, alpha=0.3, lw=1)
            axes[2].plot(it, smooth(fl), '-', color=c,
                         label='TL-Align training targets: |aligned - area|')
        if r.get('analysis'):
            axes[2].axhline(r['analysis']['mean_token_fluctuation'], color=c, ls='--', lw=1,
                            label=f'{r["label"]} model on val (traced)')
    axes[0].set(xlabel='epoch', ylabel='validation top-1 (%)', title='accuracy')
    axes[0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].set(xlabel='iteration', ylabel='training loss',
                title='loss (each arm against its own soft targets)')
    axes[2].set(xlabel='iteration', ylabel='mean |output share - area share|',
                title='token fluctuation')
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f'CPU ({os.cpu_count()} cores)'
    work_root = osp.abspath(args.work_dir)
    os.makedirs(work_root, exist_ok=True)
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    # torch's OpenMP threads spin while waiting; on a CPU shared with other work that made a
    # training step up to 20x slower here (2 cores), the passive policy costs next to nothing.
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

    options = [f'train_cfg.max_epochs={args.epochs}', f'train_dataloader.batch_size={args.batch_size}',
               f'randomness.seed={args.seed}']
    if args.epochs == 1:  # the cosine phase starts after the 1-epoch warm-up; overlap them
        options.append('param_scheduler.1.begin=0')
    if args.lr is not None:
        options.append(f'optim_wrapper.optimizer.lr={args.lr}')

    say(f'TL-Align demo on {device}; results in {work_root}')
    configs = {}
    if args.data:
        for arm in args.arms:
            path, num_classes, splits = folder_config(args, ARMS[arm][1],
                                                      osp.join(work_root, arm))
            configs[arm] = path
        dataset = (f'{args.data} ({num_classes} classes, {splits["train"]["n"]} training / '
                   f'{splits["val"]["n"]} validation images at {args.img_size}x{args.img_size})')
    else:
        sys.path.insert(0, ROOT)
        from mmtlalign.datasets import FashionMNISTError, prepare_fashion_mnist
        try:
            root = prepare_fashion_mnist(args.fmnist_root, source=args.fmnist_source)
        except FashionMNISTError as e:
            sys.exit(f'error: {e}')
        options += fmnist_options(args, root)
        configs = {arm: ARMS[arm][1] for arm in args.arms}
        dataset = (f'Fashion-MNIST ({args.subset or "all 60000"} training / '
                   f'{args.val_subset or "all 10000"} test images, 28x28)')
    options += args.cfg_options
    say(f'data: {dataset}; {args.epochs} epoch(s), batch {args.batch_size}, seed {args.seed}')

    results = []
    for arm in args.arms:
        result = train_arm(args, arm, configs[arm], options, osp.join(work_root, arm), env)
        result['analysis'] = analyse_arm(args, result, configs[arm], options, env)
        results.append(result)

    curves = osp.join(work_root, 'curves.png')
    plot_curves(results, curves, f'TL-Align vs CutMix: {dataset}')
    summary = dict(
        device=device, dataset=dataset, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, options=options, curves=curves,
        arms={r['arm']: dict(
            top1=[v['accuracy/top1'] for v in r['val']], wall_s=r['wall'],
            train_token_fluctuation=last_epoch_mean(r['train'], 'token_fluctuation'),
            analysis=r['analysis'], checkpoint=r['checkpoint'], log=r['log'])
            for r in results})
    with open(osp.join(work_root, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)

    say(f'\n== Results: {dataset}, {args.epochs} epoch(s), {device}')
    say(table(results))
    say('token fluct. train: mean |aligned - area| partner share of the TL-Align training '
        'targets (last epoch);')
    say('token fluct. val:   the same, traced through each trained model on mixed validation '
        'images.')
    say(f'\nplots:   {curves}')
    for r in results:
        if r.get('analysis'):
            say(f'         {osp.dirname(r["analysis"]["files"]["share_maps"])}/'
                '{layer_drift,share_scatter,share_maps}.png')
    say(f'results: {osp.join(work_root, "results.json")}')
    return summary


if __name__ == '__main__':
    main()
