"""Token fluctuation, made visible on a trained model (the phenomenon TL-Align corrects).

    python tools/analysis/token_fluctuation.py CONFIG CHECKPOINT [--out-dir DIR]
        [--num-batches 8] [--batch-size 64] [--num-maps 4] [--mode elem|batch] [--seed 0]

On CutMix batches built from the config's validation data (through the model's own data
preprocessor and the recipe's CutMix settings), it traces the partner share of every token
through the network, block by block, with the backbone's TL-Align tracer (ViT: class token or
pooled patch tokens; Swin: pooled tokens, stage by stage), and compares the share of the output
with the area share, the label plain CutMix would use. It writes to ``--out-dir`` (default:
``token_fluctuation/`` next to the checkpoint):

- ``layer_drift.png``: how far the output label drifts from the area label, block by block
  (mean and 10-90% band of ``|share - area share|``; individual images' signed drift);
- ``share_scatter.png``: final aligned share against area share, and the model's own predicted
  partner fraction against both;
- ``share_maps.png``: per-block partner-share maps drawn over the mixed input images;
- ``summary.json``: the numbers of the printed summary.

Works for any mmpretrain ViT or Swin classifier: a plain ``VisionTransformer`` /
``SwinTransformer`` backbone is built as its aligned subclass (same weights, same forward).
"""
import argparse
import copy
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmengine.utils import ProgressBar
from mmpretrain.registry import MODELS

from .. import workdir
from ..cli import launch
from ..errors import UserInputError
from ..models import TLAlignMix

ALIGNED_TYPES = {
    'VisionTransformer': 'AlignedVisionTransformer',
    'SwinTransformer': 'AlignedSwinTransformer',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-layer token fluctuation of a ViT/Swin classifier on CutMix batches.')
    parser.add_argument('config', help='the model\'s config file')
    parser.add_argument('checkpoint', help='checkpoint (.pth) to analyse')
    parser.add_argument('--out-dir', help='where the PNGs and summary.json go (default: '
                        'token_fluctuation/ next to the checkpoint)')
    parser.add_argument('--num-batches', type=int, default=8,
                        help='mixed validation batches to trace (default 8)')
    parser.add_argument('--batch-size', type=int, default=64, help='images per batch')
    parser.add_argument('--num-maps', type=int, default=4,
                        help='images of the first batch drawn in share_maps.png (default 4)')
    parser.add_argument('--mode', choices=['elem', 'batch'], default='elem',
                        help="CutMix box per image ('elem', default: varied area shares) or "
                        "one per batch ('batch', as in training)")
    parser.add_argument('--seed', type=int, default=0, help='seed of the CutMix boxes')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='override config keys, e.g. val_dataloader.dataset.data_root=...')
    return parser.parse_args(argv)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend; imported when drawing, not at the
    top: it takes about a second and the tracing does not need it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------
def load_cfg(args):
    options = None
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        options = parser.parse_args(['--o', *args.cfg_options]).o
    return launch.load_config(args.config, options)


def build_model(cfg, checkpoint, device):
    model_cfg = copy.deepcopy(cfg.model)
    backbone_type = model_cfg.backbone.get('type', '')
    short = backbone_type.split('.')[-1]
    if short in ALIGNED_TYPES:  # same weights and forward, plus the tracer
        model_cfg.backbone.type = ALIGNED_TYPES[short]
    if cfg.get('data_preprocessor') is not None:  # as the Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.pop('init_cfg', None)
    model_cfg.backbone.pop('init_cfg', None)  # weights come from the checkpoint
    model = MODELS.build(model_cfg)
    if not hasattr(model.backbone, 'trace_shares'):
        raise UserInputError(
            f'backbone {backbone_type!r} cannot trace token shares; the analysis needs a '
            'ViT/DeiT or Swin backbone (VisionTransformer, SwinTransformer or their Aligned* '
            'subclasses).')
    if not osp.isfile(checkpoint):
        raise UserInputError(f'checkpoint {checkpoint!r} does not exist.')
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.to(device).eval()


def build_mixer(model, mode, seed):
    trained = getattr(model, 'mixer', None)
    alpha = getattr(trained, 'cutmix_alpha', 0) or 1.0  # Mixup-only recipes: CutMix alpha 1
    return TLAlignMix(cutmix_alpha=alpha, mixup_alpha=0.0, prob=1.0, mode=mode,
                      box_grid=getattr(trained, 'box_grid', None), seed=seed)


def build_loader(cfg, batch_size):
    loader = cfg.get('val_dataloader') or cfg.get('test_dataloader')
    if not loader:
        raise UserInputError('the config has no val_dataloader or test_dataloader to take '
                             'images from.')
    loader = loader.copy()
    loader.update(batch_size=batch_size, num_workers=min(loader.get('num_workers', 0), 2),
                  persistent_workers=False)
    loader['sampler'] = dict(type='DefaultSampler', shuffle=False)
    return Runner.build_dataloader(loader, seed=0)


# ------------------------------------------------------------------------------------------
# tracing
# ------------------------------------------------------------------------------------------
def patch_size_of(model):
    size = getattr(model, 'patch_size', None) or getattr(model.backbone, 'patch_size', None)
    return tuple(size)


def denormalise(model, inputs):
    """(B, H, W, C) uint8 images from normalised inputs (RGB if the preprocessor made them)."""
    pre = model.data_preprocessor
    x = inputs.float()
    if getattr(pre, '_enable_normalize', False):
        x = x * pre.std.to(x) + pre.mean.to(x)
    return x.clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def trace_batch(model, mixer, data):
    """Trace one mixed batch; returns a dict of numpy arrays."""
    data = model.data_preprocessor(data, training=False)
    inputs, samples = data['inputs'], data['data_samples']
    labels = torch.cat([s.gt_label for s in samples]).to(inputs.device)
    mixed = mixer(inputs, patch_size_of(model))
    backbone = model.backbone
    with torch.no_grad():
        tracer = backbone.trace_shares(mixed.inputs, mixed.token_share)
        blocks = backbone.block_output_shares(tracer)  # (L, B)
        final = backbone.output_share(tracer) if hasattr(backbone, 'output_share') else blocks[-1]
        feats = model.neck(tracer.outs) if model.with_neck else tracer.outs
        probs = model.head(feats).softmax(dim=-1)
    ya, yb = labels, labels[mixed.partner]
    pa = probs.gather(1, ya[:, None])[:, 0]
    pb = probs.gather(1, yb[:, None])[:, 0]
    # an image the box left whole (or paired with itself) is unmixed: no pair to judge, and
    # counting it would make a tie of area = aligned = 0
    is_mixed = getattr(mixed, 'mixed', None)
    if is_mixed is None:
        is_mixed = (mixed.partner != torch.arange(len(labels), device=labels.device)) & \
            (mixed.area_share > 0)
    is_mixed = torch.as_tensor(is_mixed, dtype=torch.bool, device=labels.device)
    pred = torch.where(is_mixed & (ya != yb), pb / (pa + pb).clamp_min(1e-12), torch.nan)
    maps = backbone.share_maps(tracer)
    return dict(
        area=mixed.area_share.cpu().numpy(),
        mixed=is_mixed.cpu().numpy(),
        blocks=blocks.cpu().numpy(),
        final=final.cpu().numpy(),
        pred=pred.cpu().numpy(),
        token_share=mixed.token_share.cpu().numpy(),
        maps=[m.cpu().numpy() for m in maps],
        images=denormalise(model, mixed.inputs),
        grids=[tuple(m.shape[1:]) for m in maps],
    )


def stage_ends(grids):
    """Block indices (1-based) after which the token grid changes (Swin stage boundaries)."""
    return [i + 1 for i in range(len(grids) - 1) if grids[i] != grids[i + 1]]


def summarise(area, blocks, final, pred, mixed=None):
    drift = np.abs(blocks - area[None])  # (L, N)
    fluct = np.abs(final - area)
    valid = ~np.isnan(pred)
    out = dict(
        num_images=int(area.size),
        num_blocks=int(blocks.shape[0]),
        mean_token_fluctuation=float(fluct.mean()),
        median_token_fluctuation=float(np.median(fluct)),
        p90_token_fluctuation=float(np.percentile(fluct, 90)),
        max_token_fluctuation=float(fluct.max()),
        frac_over_0_1=float((fluct > 0.1).mean()),
        mean_signed_drift=float((final - area).mean()),
        per_block_mean_drift=[float(v) for v in drift.mean(axis=1)],
        num_pred_pairs=int(valid.sum()),
        num_unmixed=int(area.size - mixed.sum()) if mixed is not None else None,
    )
    if valid.any():
        err_aligned = np.abs(pred[valid] - final[valid])
        err_area = np.abs(pred[valid] - area[valid])
        out.update(
            pred_mae_vs_aligned=float(err_aligned.mean()),
            pred_mae_vs_area=float(err_area.mean()),
            pred_closer_to_aligned=float((err_aligned < err_area).mean()))
    return out


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
def plot_layer_drift(path, area, blocks, ends, title):
    plt = _pyplot()
    L = blocks.shape[0]
    depth = np.arange(L + 1)
    signed = np.concatenate([np.zeros((1, area.size)), blocks - area[None]])  # depth 0: area
    absd = np.abs(signed)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.fill_between(depth, np.percentile(absd, 10, axis=1), np.percentile(absd, 90, axis=1),
                     color='tab:red', alpha=0.2, label='10-90% of images')
    ax1.plot(depth, absd.mean(axis=1), 'o-', color='tab:red', label='mean')
    ax1.set_xlabel('block (0 = input tokens)')
    ax1.set_ylabel('|output share - area share|')
    ax1.set_title('label drift from the area label, layer by layer')
    ax1.set_ylim(bottom=0)
    ax1.legend(loc='upper left')
    rng = np.random.default_rng(0)
    show = rng.choice(area.size, size=min(40, area.size), replace=False)
    for i in show:
        ax2.plot(depth, signed[:, i], '-', color=plt.cm.viridis(area[i]), alpha=0.6, lw=1)
    ax2.axhline(0, color='k', lw=0.8)
    ax2.set_xlabel('block (0 = input tokens)')
    ax2.set_ylabel('output share - area share')
    ax2.set_title(f'{len(show)} images (colour: area share)')
    sm = plt.cm.ScalarMappable(cmap='viridis', norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax2, label='area share of the partner')
    for ax in (ax1, ax2):
        ax.set_xticks(depth)
        ax.grid(alpha=0.3)
        for e in ends:
            ax.axvline(e + 0.5, color='gray', ls='--', lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    workdir.write_figure(fig, path)  # never through a planted link
    plt.close(fig)


def plot_scatter(path, area, final, pred, summary, title):
    plt = _pyplot()
    valid = ~np.isnan(pred)
    fig, axes = plt.subplots(1, 2 if valid.any() else 1, figsize=(10 if valid.any() else 5, 4.6),
                             squeeze=False)
    ax = axes[0, 0]
    ax.scatter(area, final, s=10, alpha=0.6, color='tab:red', edgecolors='none')
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='area label (plain CutMix)')
    ax.set_xlabel('area share of the partner (1 - lambda)')
    ax.set_ylabel('aligned share of the output (TL-Align)')
    ax.set_title(f'mean |aligned - area| = {summary["mean_token_fluctuation"]:.3f}')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect('equal')
    ax.legend(loc='upper left')
    ax.grid(alpha=0.3)
    if valid.any():
        ax = axes[0, 1]
        ax.scatter(final[valid], pred[valid], s=10, alpha=0.5, color='tab:red', edgecolors='none',
                   label=f'vs aligned share (MAE {summary["pred_mae_vs_aligned"]:.3f})')
        ax.scatter(area[valid], pred[valid], s=10, alpha=0.5, color='tab:blue',
                   edgecolors='none',
                   label=f'vs area share (MAE {summary["pred_mae_vs_area"]:.3f})')
        ax.plot([0, 1], [0, 1], 'k--', lw=1)
        ax.set_xlabel('label share of the partner')
        ax.set_ylabel('model: p(partner) / (p(image) + p(partner))')
        ax.set_title('what the trained model predicts')
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect('equal')
        ax.legend(loc='upper left', fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    workdir.write_figure(fig, path)  # never through a planted link
    plt.close(fig)


def _upsample(share_map, size):
    h, w = share_map.shape
    H, W = size
    rows = np.minimum(np.arange(H) * h // H, h - 1)
    cols = np.minimum(np.arange(W) * w // W, w - 1)
    return share_map[rows][:, cols]


def plot_share_maps(path, batch, num_maps, title, block_shares):
    plt = _pyplot()
    images = batch['images'][:num_maps]
    K, H, W, C = images.shape
    maps = [m[:num_maps] for m in batch['maps']]
    L = len(maps)
    ph, pw = batch['patch_size']
    token0 = batch['token_share'][:num_maps].reshape(K, H // ph, W // pw)
    cols = 2 + L
    fig, axes = plt.subplots(K, cols, figsize=(1.45 * cols + 0.8, 1.55 * K + 0.6), squeeze=False)
    gray = images[..., 0] if C == 1 else None
    im = None
    for k in range(K):
        base = gray[k] if C == 1 else images[k]
        panels = [None, token0[k]] + [m[k] for m in maps]
        for j, share in enumerate(panels):
            ax = axes[k, j]
            ax.imshow(base, cmap='gray' if C == 1 else None, vmin=0, vmax=255)
            if share is not None:
                im = ax.imshow(_upsample(share, (H, W)), cmap='coolwarm', vmin=0, vmax=1,
                               alpha=0.55, interpolation='nearest')
            if j >= 2:
                ax.text(0.03, 0.04, f'{block_shares[j - 2, k]:.2f}', transform=ax.transAxes,
                        fontsize=7, color='k', backgroundcolor=(1, 1, 1, 0.7))
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_title('mixed input' if j == 0 else 'tokens in' if j == 1 else
                             f'block {j - 1}', fontsize=8)
        axes[k, 0].set_ylabel(f'area {batch["area"][k]:.2f}\nout {batch["final"][k]:.2f}',
                              fontsize=8)
    fig.suptitle(title + '\npartner share per token (blue: own image, red: partner); '
                 'corner: output share after that block', fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    cax = fig.add_axes((0.915, 0.15, 0.015, 0.65))
    fig.colorbar(im, cax=cax, label='partner share')
    workdir.write_figure(fig, path)  # never through a planted link
    plt.close(fig)


# ------------------------------------------------------------------------------------------
def run(args):
    _pyplot()  # the Agg backend before anything draws
    if args.num_batches < 1 or args.batch_size < 2:
        raise UserInputError('--num-batches must be >= 1 and --batch-size >= 2 (CutMix pairs '
                             'images within a batch).')
    cfg = load_cfg(args)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(args.seed)
    model = build_model(cfg, args.checkpoint, device)
    mixer = build_mixer(model, args.mode, args.seed)
    loader = build_loader(cfg, args.batch_size)
    num_batches = min(args.num_batches, len(loader))
    out_dir = args.out_dir or osp.join(osp.dirname(osp.abspath(args.checkpoint)),
                                       'token_fluctuation')
    workdir.makedirs(out_dir)

    backbone_name = type(model.backbone).__name__
    print(f'tracing {num_batches} CutMix batches of {args.batch_size} validation images through '
          f'{backbone_name} ({device}) ...', flush=True)
    batches = []
    bar = ProgressBar(num_batches, file=sys.stdout)
    for i, data in enumerate(loader):
        if i >= num_batches:
            break
        batches.append(trace_batch(model, mixer, data))
        bar.update()
    print()
    area = np.concatenate([b['area'] for b in batches])
    blocks = np.concatenate([b['blocks'] for b in batches], axis=1)
    final = np.concatenate([b['final'] for b in batches])
    pred = np.concatenate([b['pred'] for b in batches])
    summary = summarise(area, blocks, final, pred,
                        np.concatenate([b['mixed'] for b in batches]))
    summary.update(config=args.config, checkpoint=args.checkpoint, backbone=backbone_name,
                   output=getattr(model.backbone, 'out_type', 'avg_featmap'), mode=args.mode,
                   cutmix_alpha=mixer.cutmix_alpha)

    name = osp.splitext(osp.basename(args.config))[0]
    ends = stage_ends(batches[0]['grids'])
    first = batches[0]
    first['patch_size'] = patch_size_of(model)
    files = dict(layer_drift=osp.join(out_dir, 'layer_drift.png'),
                 share_scatter=osp.join(out_dir, 'share_scatter.png'),
                 share_maps=osp.join(out_dir, 'share_maps.png'))
    plot_layer_drift(files['layer_drift'], area, blocks, ends, f'{name}: token fluctuation')
    plot_scatter(files['share_scatter'], area, final, pred, summary, name)
    plot_share_maps(files['share_maps'], first, min(args.num_maps, len(first['area'])), name,
                    first['blocks'])
    summary['files'] = files
    workdir.write_json(osp.join(out_dir, 'summary.json'), summary, indent=2)
    print_summary(summary)
    return summary


def print_summary(s):
    out = 'class token' if s['output'] == 'cls_token' else 'pooled tokens'
    print(f'Token fluctuation of {s["backbone"]} ({out}), {s["num_images"]} CutMix-mixed '
          f'validation images, {s["num_blocks"]} blocks:')
    print(f'  |aligned share - area share| of the output: mean {s["mean_token_fluctuation"]:.3f}, '
          f'median {s["median_token_fluctuation"]:.3f}, 90th pct {s["p90_token_fluctuation"]:.3f}, '
          f'max {s["max_token_fluctuation"]:.3f}; {100 * s["frac_over_0_1"]:.0f}% of images '
          'drift by more than 0.1')
    per_block = ' '.join(f'{v:.3f}' for v in s['per_block_mean_drift'])
    print(f'  mean drift after each block: {per_block}')
    print(f'  mean signed drift (aligned - area): {s["mean_signed_drift"]:+.3f}')
    if 'pred_mae_vs_aligned' in s:
        print(f'  the model\'s predicted partner fraction is closer to the aligned share than to '
              f'the area share for {100 * s["pred_closer_to_aligned"]:.0f}% of '
              f'{s["num_pred_pairs"]} mixed pairs of different classes (MAE '
              f'{s["pred_mae_vs_aligned"]:.3f} vs {s["pred_mae_vs_area"]:.3f})')
    if s.get('num_unmixed'):
        print(f'  {s["num_unmixed"]} of {s["num_images"]} images were left unmixed by their box '
              '(empty box or paired with themselves): not counted as pairs')
    for key, path in s['files'].items():
        print(f'  {key}: {path}')


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except UserInputError as e:
        sys.exit(f'error: {e}')

