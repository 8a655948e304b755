"""The main job: an embedded benchmark suite on real data.

    bash tools/run_demo.sh [options]        # sets up .venv first, then runs this
    python tools/demo.py [options]

Default: the canvas suite (configs/benchmarks/fmnist_canvas.py): Fashion-MNIST (prepared on
first use from Debian's ``dataset-fashion-mnist`` package, else mmpretrain's download) with each
garment on a 56x56 black canvas, where the label rules differ; a small DeiT-style ViT from
``configs/tlalign/demo/``; the arms CutMix and TL-Align with 3 seeds, and on every model the
label-fidelity stage (each label rule's share against the content share of the garments' pixels)
and calibration. ``--suite fmnist`` runs the fast suite instead (configs/benchmarks/fmnist.py:
28x28 images, CutMix, TL-Align and TransMix). Each cell is trained by ``tools/train.py``
through the benchmark runner (``mmtlalign.benchmark``; finished cells are kept and skipped, an
interrupted one resumes when run again). Then each arm's first-seed model is traced by
``tools/analysis/token_fluctuation.py``. It prints the table and a verdict that names a
difference only when its paired 95% interval over seeds excludes 0, and writes to ``--work-dir``
(default ``work_dirs/demo``): ``results.{json,md,png}``, ``curves.png`` and per cell the
Runner's logs, checkpoint and (first seed) the token-fluctuation plots.

``--budget N`` trains N× the default schedule (more epochs); ``--data PATH`` runs the fast
suite's arms on your own ImageNet-layout folder, resized to ``--img-size``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

#: the default schedule of a cell in both suites (configs/tlalign/demo/fmnist_vit_cutmix.py)
EPOCHS, SUBSET, VAL_SUBSET, BATCH = 4, 20000, 2000, 32
TRAIN_IMAGES = 60000  # in Fashion-MNIST's training split
PATCH = 7  # the demo ViT's patch size
#: the arms of each suite (--suite; configs/benchmarks/fmnist_canvas.py and fmnist.py), and
#: those the main job runs by default: of the canvas suite (DEFAULT_ARMS) or the fast one
SUITE_ARMS = {
    'canvas': ['cutmix', 'tlalign', 'transmix', 'oracle'],
    'fmnist': ['cutmix', 'tlalign', 'transmix', 'tlalign-dense', 'origin-dense', 'mixpro',
               'maskmix', 'smmix', 'tokenmix', 'tlalign-maskmix', 'tlalign-tokenmix'],
}
ARMS = sorted(set(sum(SUITE_ARMS.values(), [])))
DEFAULT_ARMS = ['cutmix', 'tlalign']
FAST_ARMS = ['cutmix', 'tlalign', 'transmix']


def budget_schedule(budget):
    """(subset, epochs) that show each cell ``budget`` x the default number of images."""
    images = budget * EPOCHS * SUBSET
    subset = min(TRAIN_IMAGES, max(BATCH * 2, round(images / EPOCHS)))
    return (0 if subset >= TRAIN_IMAGES else subset), max(EPOCHS, round(images / subset))


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description='CutMix against TL-Align (and more) on Fashion-MNIST over seeds: train, '
        'compare accuracy and label fidelity with paired confidence intervals, plot.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--suite', choices=list(SUITE_ARMS), default=None,
                   help='canvas: garments on a 56x56 canvas, where the label rules differ, with '
                   'the label-fidelity stage (about 15 min on 2 CPU cores); fmnist: the fast '
                   '28x28 suite (about 7 min). Default: canvas, fmnist with --data')
    p.add_argument('--arms', nargs='+', choices=ARMS, default=None,
                   help=f'arms to run (default: {" ".join(DEFAULT_ARMS)} of the canvas suite, '
                   f'{" ".join(FAST_ARMS)} of the fmnist one); canvas also has transmix and '
                   'oracle (trained on the content share); fmnist: tlalign-dense / origin-dense '
                   'add dense token labels (traced / starting shares) to TL-Align, and the peers')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                   help='seeds of every arm (the arms of one seed share weights, data order '
                   'and CutMix boxes)')
    p.add_argument('--budget', type=float, default=1.0,
                   help='training images seen by each cell, as a multiple of the default '
                   f'{EPOCHS} epochs x {SUBSET} images: more (or fewer) distinct images for '
                   f'{EPOCHS} epochs, up to all {TRAIN_IMAGES}, then more epochs')
    p.add_argument('--epochs', type=int, default=None,
                   help='epochs of each cell (overrides the budget)')
    p.add_argument('--subset', type=int, default=None,
                   help='training images used (0: all; overrides the budget)')
    p.add_argument('--val-subset', type=int, default=VAL_SUBSET,
                   help='test images to validate on (0: all; Fashion-MNIST has 10,000)')
    p.add_argument('--batch-size', type=int, default=BATCH, help='training batch size')
    p.add_argument('--lr', type=float, default=None,
                   help="AdamW learning rate (default: the config's)")
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                   help='where the cells, plots and results go')
    p.add_argument('--data', metavar='PATH',
                   help='your own ImageNet-layout folder instead of Fashion-MNIST')
    p.add_argument('--img-size', type=int, default=28,
                   help=f'with --data: images are resized/cropped to this size (a multiple of '
                   f'the patch size {PATCH})')
    p.add_argument('--fmnist-root', default=None,
                   help='folder of the prepared Fashion-MNIST idx files (default: '
                   '$MMTLALIGN_CACHE/fashion-mnist, ~/.cache/mmtlalign/fashion-mnist)')
    p.add_argument('--fmnist-source', default=None,
                   help='folder holding the four Fashion-MNIST idx files (.gz or not) to '
                   'prepare from, instead of the Debian package')
    p.add_argument('--analysis-batches', type=int, default=4,
                   help='test batches of 64 traced by the token-fluctuation analysis '
                   '(0: skip the analysis)')
    p.add_argument('--jobs', type=int, default=0,
                   help='cells trained side by side (0: one per CPU core, at most one per '
                   'arm; 1 on a GPU)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='extra config overrides for every cell, key=value')
    args = p.parse_args(argv)
    args.suite = args.suite or ('fmnist' if args.data else 'canvas')
    if args.data and args.suite == 'canvas':
        p.error('--data runs the fmnist suite (--suite fmnist): the canvas suite places '
                "Fashion-MNIST's garments, whose background is black, on a larger canvas")
    if args.arms is None:
        args.arms = DEFAULT_ARMS if args.suite == 'canvas' else FAST_ARMS
    unknown = [a for a in args.arms if a not in SUITE_ARMS[args.suite]]
    if unknown:
        p.error(f'--arms {" ".join(unknown)}: not in the {args.suite} suite (its arms: '
                f'{" ".join(SUITE_ARMS[args.suite])}; --suite picks the other)')
    if args.budget <= 0:
        p.error('--budget must be > 0')
    subset, epochs = budget_schedule(args.budget)
    args.subset = subset if args.subset is None else args.subset
    args.epochs = epochs if args.epochs is None else args.epochs
    if args.epochs < 1:
        p.error('--epochs must be >= 1')
    if args.subset < 0 or args.val_subset < 0:
        p.error('--subset and --val-subset must be >= 0 (0: all images)')
    if args.batch_size < 2:
        p.error('--batch-size must be >= 2 (CutMix pairs images within a batch)')
    if args.img_size % PATCH:
        p.error(f'--img-size must be a multiple of the patch size {PATCH}, got {args.img_size}')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmtlalign.benchmark.launch import stop_on_sigterm
    stop_on_sigterm()
    from mmtlalign.benchmark.demo import run_demo
    from mmtlalign.errors import UserInputError
    try:
        return run_demo(args)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        sys.exit('interrupted; run the same command again to resume (finished cells are kept).')


if __name__ == '__main__':
    main()
