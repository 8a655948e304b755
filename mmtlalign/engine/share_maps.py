"""Watch the labels move: every N iterations, a grid of the training batch's mixed images with
their per-token partner-share maps, to the visualizer's backends.

OpenMixup's ``plot_mix`` draws the mixed images with their mixing ratio. :class:`ShareMapHook`
draws, for a few images of a real training step, where each token's label came from (the
CutMix share map, the area label) and where TL-Align moved it, block by block (the traced
shares of that very step, no extra forward), with the partner share of the target under
area labels and under the traced ones. It writes one RGB image per draw with
``runner.visualizer.add_image('share_maps', ...)``: ``LocalVisBackend`` saves
``<work_dir>/<timestamp>/vis_data/vis_image/share_maps_<iter>.png``, ``TensorboardVisBackend``
shows it under Images.

Opt-in: ``custom_hooks = [dict(type='ShareMapHook', interval=500)]`` (on in the demo configs
of the main job, off in the ImageNet recipes). Needs :class:`TLAlignClassifier`; a label rule
that does not trace (area labels, TransMix) gets the area maps only.
"""
import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..errors import UserInputError


@HOOKS.register_module()
class ShareMapHook(Hook):
    """Draw the mixed images of a training step with their share maps every ``interval`` iters.

    Args:
        interval (int): draw at every ``interval``-th training iteration.
        num_images (int): rows of the grid: the first mixed images of the batch.
        blocks (list[int], optional): 1-based blocks whose traced maps are drawn. Default:
            the first, the middle and the last.
        name (str): the image's name for the backends.
    """
    priority = 'LOW'

    def __init__(self, interval=500, num_images=4, blocks=None, name='share_maps'):
        if not isinstance(interval, int) or interval < 1:
            raise UserInputError(f'ShareMapHook interval must be a positive int, got '
                                 f'{interval!r}.')
        if not isinstance(num_images, int) or num_images < 1:
            raise UserInputError(f'ShareMapHook num_images must be a positive int, got '
                                 f'{num_images!r}.')
        self.interval = interval
        self.num_images = num_images
        self.blocks = blocks
        self.name = name

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = unwrap(runner.model)
        if not hasattr(model, 'keep_mix'):
            raise UserInputError(f'ShareMapHook draws the mixed batches of TLAlignClassifier; '
                                 f'the model is a {type(model).__name__}: remove the hook.')
        model.keep_mix = is_main_process() and self.every_n_train_iters(runner, self.interval)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = unwrap(runner.model)
        record, model.last_mix, model.keep_mix = model.last_mix, None, False
        if record is None:
            return
        classes = None
        try:
            classes = runner.train_dataloader.dataset.metainfo.get('classes')
        except Exception:  # a dataset without metainfo: class indices are drawn
            pass
        image = draw_share_maps(record, images_for_display(record['inputs'],
                                                           model.data_preprocessor),
                                self.num_images, self.blocks, classes,
                                title=f'iteration {runner.iter + 1}')
        runner.visualizer.add_image(self.name, image, step=runner.iter + 1)


def unwrap(model):
    """The classifier inside a DDP wrapper."""
    return model.module if is_model_wrapper(model) else model


def images_for_display(inputs, preprocessor):
    """(B, C, H, W) normalised inputs -> (B, H, W, 3) float RGB in [0, 1]."""
    x = inputs.detach().float().cpu()
    mean, std = getattr(preprocessor, 'mean', None), getattr(preprocessor, 'std', None)
    if mean is not None and std is not None:
        x = x * std.float().cpu() + mean.float().cpu()
        x = x / 255.
    else:  # unknown normalisation: stretch each image
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and not getattr(preprocessor, '_channel_conversion', True):
        x = x.flip(1)  # the preprocessor kept the BGR order of the loaded images
    return x[:, :3].clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _pick_blocks(num_blocks, blocks):
    if blocks:
        bad = [b for b in blocks if not 1 <= b <= num_blocks]
        if bad:
            raise UserInputError(f'ShareMapHook blocks {bad} out of range: the backbone traced '
                                 f'{num_blocks} blocks (1-based).')
        return list(blocks)
    return sorted({1, (num_blocks + 1) // 2, num_blocks})


def draw_share_maps(record, images, num_images, blocks=None, classes=None, title=''):
    """The grid as an (H, W, 3) uint8 RGB array.

    One row per mixed image: the image; the partner share of every token where the mix put
    it (the area label's); the shares TL-Align traced after the chosen blocks; and the
    partner share of the target, area vs traced. Share maps are coloured from blue (the
    image's own content) to red (the pasted partner), each token's value written in it on
    small grids, with the pasted region outlined, so a label that moved shows as colour
    leaving or entering the outline.

    Args:
        record (dict): :attr:`TLAlignClassifier.last_mix`: ``labels`` (B,), ``partner`` (B,),
            ``token_share`` (B, N) at the input, ``area_share`` (B,), ``share`` (B,) of the
            output under the run's rule, ``maps`` per-block (B, h_i, w_i) or None, ``mixed``
            (B,) bool.
        images (ndarray): (B, H, W, 3) float RGB in [0, 1].
        num_images (int): rows.
        blocks (list[int], optional): 1-based blocks to draw (default first, middle, last).
        classes (sequence[str], optional): class names.
        title (str): the figure's title.
    """
    # matplotlib is imported only when drawing (it is heavy, and the hook is opt-in)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    mixed = record['mixed'].cpu().numpy()
    rows = [i for i in range(len(mixed)) if mixed[i]] or list(range(len(mixed)))
    rows = rows[:num_images]
    maps = record['maps']
    chosen = _pick_blocks(len(maps), blocks) if maps else []
    labels, partner = record['labels'].cpu().numpy(), record['partner'].cpu().numpy()
    area = record['area_share'].float().cpu().numpy()
    share = record['share'].float().cpu().numpy()
    H, W = images.shape[1:3]
    grid_h, grid_w = _grid(record['token_share'].shape[1], H, W)
    start = record['token_share'].float().cpu().reshape(-1, grid_h, grid_w).numpy()

    def name(c):
        return str(classes[c]) if classes is not None and c < len(classes) else f'class {c}'

    heads = ['mixed image', 'mixed: pasted share\n(the area label)']
    heads += [f'traced after block {b}' + (' (last)' if b == len(maps) else '') for b in chosen]
    heads += ['pasted share of the target']
    ncols = len(heads)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.3 * ncols, 2.35 * len(rows) + 1.2),
                             squeeze=False, layout='constrained')
    cmap = plt.get_cmap('coolwarm')
    for r, i in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(images[i], interpolation='nearest')
        ax.set_ylabel(f'{name(labels[i])}\n+ {name(labels[partner[i]])}\n(pasted)',
                      fontsize=9)
        panels = [start[i]] + [maps[b - 1][i].float().cpu().numpy() for b in chosen]
        for c, m in enumerate(panels, 1):
            _draw_map(axes[r, c], m, start[i], cmap)
        ax = axes[r, -1]
        # the run's own target share: TL-Align's traced one, or the rule's (area, TransMix)
        bars = [('area', area[i], 'tab:gray'), ('traced' if maps else 'run\'s rule',
                                                share[i], 'tab:red' if maps else 'tab:blue')]
        ax.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars],
                height=0.6)
        for y, (_, v, _) in enumerate(bars):
            ax.text(v + 0.03 if v < 0.8 else v - 0.03, y, f'{v:.2f}', va='center',
                    ha='left' if v < 0.8 else 'right', fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(len(bars) - 0.5, -0.5)
        ax.tick_params(labelsize=8)
        for a in axes[r, :-1]:
            a.set_xticks([])
            a.set_yticks([])
    for c, head in enumerate(heads):
        axes[0, c].set_title(head, fontsize=9)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, 1))
    bar = fig.colorbar(sm, ax=axes[-1, 1:-1].tolist(), orientation='horizontal',
                       fraction=0.08, aspect=30)
    bar.set_label('pasted (partner) share of each token\'s label\n0 = own image, '
                  '1 = pasted image; outlined: the tokens the pasted pixels went to',
                  fontsize=8)
    bar.ax.tick_params(labelsize=8)
    what = ('TL-Align: where the labels of the mixed tokens moved' if maps else
            'the mixed tokens\' labels (this run\'s rule does not trace them)')
    fig.suptitle(what + (f' ({title})' if title else ''), fontsize=11)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _draw_map(ax, share_map, start_map, cmap):
    """One (h, w) share map, its values written in on small grids, and the outline of the
    tokens that received pasted pixels (from the starting map, scaled to this map's grid)."""
    h, w = share_map.shape
    ax.imshow(share_map, cmap=cmap, vmin=0, vmax=1, interpolation='nearest')
    if h * w <= 64:
        for y in range(h):
            for x in range(w):
                v = share_map[y, x]
                ax.text(x, y, f'{v:.2f}'.lstrip('0') if v < 1 else '1', ha='center',
                        va='center', fontsize=7, color='white' if abs(v - 0.5) > 0.3 else 'k')
    pasted = start_map > 0
    sh, sw = pasted.shape
    fy, fx = h / sh, w / sw  # start-grid cells per cell of this map (Swin stages: < 1)
    for y, x in zip(*np.nonzero(pasted)):
        for dy, dx, edge in ((-1, 0, 'top'), (1, 0, 'bottom'), (0, -1, 'left'),
                             (0, 1, 'right')):
            ny, nx = y + dy, x + dx
            if 0 <= ny < sh and 0 <= nx < sw and pasted[ny, nx]:
                continue  # an inner edge
            y0, y1, x0, x1 = y * fy - .5, (y + 1) * fy - .5, x * fx - .5, (x + 1) * fx - .5
            ys, xs = {'top': ([y0, y0], [x0, x1]), 'bottom': ([y1, y1], [x0, x1]),
                      'left': ([y0, y1], [x0, x0]), 'right': ([y0, y1], [x1, x1])}[edge]
            ax.plot(xs, ys, color='k', lw=1.5, solid_capstyle='projecting')
    ax.set_xlim(-.5, w - .5)
    ax.set_ylim(h - .5, -.5)


def _grid(num_tokens, H, W):
    """(h, w) of a row-major token grid of ``num_tokens`` with the image's aspect ratio."""
    h = int(round((num_tokens * H / W) ** 0.5))
    if h < 1 or num_tokens % h:
        raise ValueError(f'{num_tokens} tokens do not tile a {H}x{W} image.')
    return h, num_tokens // h


