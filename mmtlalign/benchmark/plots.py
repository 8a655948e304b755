"""``results.png``: what a benchmark suite measured, drawn for a person to read.

Top to bottom: each training (and downstream) metric per seed with the mean and its 95%
interval; the paired differences against the baselines, one axis per metric family (a family
shares a unit and a range: top-1 and the other accuracies in %, errors in %, ECE in %, NLL in
nats), so that a ±0.01 NLL difference never shares an axis with a ±10 top-1 one; then the
evaluation stages' curves (occlusion, patch shuffle, corruption, reliability diagram).

Every arm has one colour, the same as in the main job's ``curves.png`` (:func:`arm_colors`);
whether an interval excludes 0 is told by filled vs hollow markers, never by a colour. Intervals
are clipped to the metric's range (two seeds give t = 12.7 and a top-1 interval can reach past
0 and 100), with an arrow head where a clipped interval goes on. Reliability bins holding
fewer than :data:`MIN_BIN_IMAGES` images or :data:`MIN_BIN_SHARE` of them are not drawn: their
accuracy is noise (a bin of one image is at 0 or 1). Texts never overlap: the figure uses
matplotlib's constrained layout, wraps long arm and comparison labels, and keeps legends
outside the data.
"""
import math
import textwrap

import numpy as np

from .. import workdir
from .fidelity_plot import fidelity_panels
from .stats import t_quantile

#: the main job's arms keep their colours everywhere (curves.png, results.png)
FIXED_COLORS = {'cutmix': 'tab:blue', 'tlalign': 'tab:red', 'transmix': 'tab:green'}
#: the colours the other arms take in suite order (tab10's rest, then tab20b's darkest
#: distinct ones); grey is kept for the seeds, black for what belongs to no arm
OTHER_COLORS = ('tab:orange', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan',
                '#393b79', '#e7ba52', '#7b4173', '#637939')
#: reliability bins with fewer images (or less than MIN_BIN_SHARE of them) are not drawn
MIN_BIN_IMAGES = 20
MIN_BIN_SHARE = 0.01
#: per-metric markers inside one family's axis
MARKERS = 'osD^vPX*'
SEED_MARKERS = 'o^vDsP'
SEED_GREY = '0.55'


def arm_colors(names):
    """``{arm name: matplotlib colour}``: the fixed colours of the main job's arms, the others
    from :data:`OTHER_COLORS` in the order given."""
    colors, k = {}, 0
    for name in names:
        if name in FIXED_COLORS:
            colors[name] = FIXED_COLORS[name]
        else:
            colors[name] = OTHER_COLORS[k % len(OTHER_COLORS)]
            k += 1
    return colors


def family(metric):
    """``(family, unit, (low, high))`` of a metric name; ``None`` ends are unbounded.

    Metrics of one family share a unit and a meaning, so their differences can share an axis.
    """
    if metric == 'top-1' or metric.endswith(' top-1') or metric == 'occlusion AUC':
        return 'accuracy', '%', (0.0, 100.0)
    if metric == 'corruption error':
        return 'error', '%', (0.0, 100.0)
    if metric.startswith('ImageNet-C mCE'):  # relative to AlexNet's errors: may pass 100
        return 'error', '%', (0.0, None)
    if metric == 'ECE':
        return 'ECE', '%', (0.0, 100.0)
    if metric == 'NLL':
        return 'NLL', 'nats', (0.0, None)
    if metric.startswith('share MAE '):  # label_fidelity, in percentage points
        if ' vs ' in metric:  # already a difference of two MAEs
            return 'share MAE', 'pp', (-100.0, 100.0)
        return 'share MAE', 'pp', (0.0, 100.0)
    if metric.startswith('share r '):  # label_fidelity: Pearson r with the content share
        return 'share r', '', (-1.0, 1.0)
    if 'mIoU' in metric or metric.endswith(' AP'):
        return metric, '%', (0.0, 100.0)
    return metric, '', (None, None)


def _span(lo, hi):
    """The range of a difference of two values in ``(lo, hi)``."""
    if lo is None or hi is None:
        return None, None
    return lo - hi, hi - lo


def _clip(low, high, bounds):
    """``(low, high, clipped at low, clipped at high)`` within ``bounds``."""
    lo, hi = bounds
    cut_lo = lo is not None and low < lo
    cut_hi = hi is not None and high > hi
    return (lo if cut_lo else low), (hi if cut_hi else high), cut_lo, cut_hi


def _interval(ax, pos, center, low, high, bounds, color, filled=True, vertical=True,
              marker='s', ms=7, label=None, gid=None):
    """A mean with its interval clipped to ``bounds``; an arrow head marks a clipped end."""
    low, high, cut_lo, cut_hi = _clip(low, high, bounds)
    line = ([pos, pos], [low, high]) if vertical else ([low, high], [pos, pos])
    ax.plot(*line, '-', color=color, lw=1.6, solid_capstyle='butt')
    for end, cut, head in ((low, cut_lo, 'v' if vertical else '<'),
                           (high, cut_hi, '^' if vertical else '>')):
        xy = (pos, end) if vertical else (end, pos)
        if cut:
            ax.plot(*xy, head, color=color, ms=6)
        else:
            cap = '_' if vertical else '|'
            ax.plot(*xy, cap, color=color, ms=8, mew=1.6)
    xy = (pos, center) if vertical else (center, pos)
    ax.plot(*xy, marker, color=color, ms=ms, mew=1.5, label=label, gid=gid,
            markerfacecolor=color if filled else 'white')
    return cut_lo or cut_hi


def _half_width(m):
    if m['std'] is None or m['n'] < 2:
        return None
    return t_quantile(0.975, m['n'] - 1) * m['std'] / math.sqrt(m['n'])


def _wrap(text, width):
    return textwrap.fill(text, width, break_long_words=False)


# ---- panels ---------------------------------------------------------------------------------
def seeds_panel(ax, results, metric, colors):
    """One metric per seed (grey, lines join a seed) and the mean ± 95% CI in the arm colour."""
    names = list(results['arms'])
    _, unit, bounds = family(metric['name'])
    seeds = [str(s) for s in results['seeds']]
    for k, seed in enumerate(seeds):
        pts = [(i - 0.12, results['arms'][n]['metrics'][metric['name']]['per_seed'][seed])
               for i, n in enumerate(names)
               if seed in results['arms'][n]['metrics'][metric['name']]['per_seed']]
        if pts:
            ax.plot(*zip(*pts), '-', color=SEED_GREY, lw=0.8, alpha=0.6)
            ax.plot(*zip(*pts), SEED_MARKERS[k % len(SEED_MARKERS)], color=SEED_GREY, ms=5,
                    label=f'seed {seed}')
    clipped = False
    for i, n in enumerate(names):
        m = results['arms'][n]['metrics'][metric['name']]
        if m['mean'] is None:
            continue
        half = _half_width(m)
        if half is None:
            ax.plot(i + 0.12, m['mean'], 's', color=colors[n], ms=7, gid=f'arm:{n}')
            continue
        clipped |= _interval(ax, i + 0.12, m['mean'], m['mean'] - half, m['mean'] + half,
                             bounds, colors[n], label='mean ± 95% CI' if i == 0 else None,
                             gid=f'arm:{n}')
    ax.set_xticks(range(len(names)))
    width = max(8, int(180 / max(1, len(names))))  # characters per line of an arm label
    ax.set_xticklabels([_wrap(results['arms'][n]['label'], width) for n in names], fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    stage = '' if metric['stage'] == 'train' else f' ({metric["stage"]})'
    ax.set_ylabel(f'{metric["name"]}{stage}' + (f' ({unit})' if unit else ''))
    ax.set_title(f'{metric["name"]}{stage}: each seed and the mean over seeds')
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles = [ax.errorbar([], [], yerr=[], fmt='s', color='k', capsize=4)
               if lab.startswith('mean') else h for h, lab in zip(handles, labels)]
    if clipped:
        labels = [lab + ' (clipped to the range)' if lab.startswith('mean') else lab
                  for lab in labels]
    ax.legend(handles, labels, fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)


def difference_rows(comparisons):
    """The comparison labels (``arm - baseline``) in order of first appearance."""
    rows = []
    for c in comparisons:
        if c['label'] not in rows:
            rows.append(c['label'])
    return rows


def differences_panel(ax, comps, rows, fam, unit, colors, show_labels):
    """Paired differences of one metric family: a row per comparison, a marker per metric,
    the arm's colour; filled where the 95% CI excludes 0, hollow where it includes 0."""
    metrics = list(dict.fromkeys(c['metric'] for c in comps))
    span = len(metrics)
    offsets = {m: (0.0 if span == 1 else 0.28 * (2 * k / (span - 1) - 1))
               for k, m in enumerate(metrics)}
    for c in comps:
        y = rows.index(c['label']) + offsets[c['metric']]
        bounds = _span(*family(c['metric'])[2])
        marker = MARKERS[metrics.index(c['metric']) % len(MARKERS)]
        ax.plot(c['diffs'], [y] * len(c['diffs']), '.', color=SEED_GREY, ms=3)
        if c['ci'] is None:
            ax.plot(c['mean'], y, marker, color=colors[c['arm']], ms=6,
                    markerfacecolor='white', gid=c['metric'])
            continue
        _interval(ax, y, c['mean'], c['ci'][0], c['ci'][1], bounds, colors[c['arm']],
                  filled=bool(c['excludes_zero']), vertical=False, marker=marker, ms=6,
                  gid=c['metric'])
    ax.axvline(0, color='k', lw=1)
    ax.locator_params(axis='x', nbins=5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_wrap(r, 28) for r in rows], fontsize=8)
    # the axes share y: hide (not clear) the labels of all but the row's first
    ax.tick_params(axis='y', labelleft=show_labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f'paired Δ{f" ({unit})" if unit else ""}, arm − baseline')
    ax.set_title(f'{fam}: paired differences, 95% CI', fontsize=11)
    ax.grid(alpha=0.3, axis='x')
    if span > 1:
        handles = [ax.plot([], [], MARKERS[k % len(MARKERS)], color='k', ms=6,
                           markerfacecolor='white', label=m)[0]
                   for k, m in enumerate(metrics)]
        ax.legend(handles=handles, fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)
    ax.set_gid(f'differences:{fam}')


def curve_panel(ax, ev, stage, key, colors, labels, xlabel, ylabel, title, bounds):
    """Mean ± std over seeds of one stage's curve (occlusion, corruption), per arm."""
    for arm, per in ev['curves'].items():
        mean = (per.get(stage) or {}).get(key)
        if not mean or mean.get('y') is None:
            continue
        x, y = np.asarray(mean['x'], float), np.asarray(mean['y'], float)
        ax.plot(x, y, 'o-', ms=4, color=colors[arm], label=labels[arm])
        if mean.get('std') is not None:
            std = np.asarray(mean['std'], float)
            lo, hi = y - std, y + std
            if bounds[0] is not None:
                lo = np.maximum(lo, bounds[0])
            if bounds[1] is not None:
                hi = np.minimum(hi, bounds[1])
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.12, lw=0)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)


def shuffle_panel(ax, ev, stage, colors, labels):
    """Top-1 under patch shuffle: per grid, one point per arm with its std over seeds."""
    arms = [a for a, per in ev['curves'].items()
            if ((per.get(stage) or {}).get('mean') or {}).get('y') is not None]
    grids = None
    for k, arm in enumerate(arms):
        mean = ev['curves'][arm][stage]['mean']
        grids = mean['x']
        xs = np.arange(len(grids)) + (k - (len(arms) - 1) / 2) * (0.7 / max(1, len(arms)))
        std = mean.get('std')
        for j, (x, y) in enumerate(zip(xs, mean['y'])):
            if std is not None:
                ax.plot([x, x], [max(0.0, y - std[j]), min(100.0, y + std[j])], '-',
                        color=colors[arm], lw=1.4)
            ax.plot(x, y, 'o', color=colors[arm], ms=6)
    if grids is not None:
        ax.set_xticks(range(len(grids)))
        ax.set_xticklabels([f'{g}x{g} blocks' for g in grids])
        ax.set_xlim(-0.5, len(grids) - 0.5)
    ax.set(ylabel='top-1 (%)')
    ax.set_title(f'{stage}: top-1 with shuffled blocks (mean ± std)', fontsize=11)
    ax.grid(alpha=0.3, axis='y')


def reliability_panel(ax, ev, stage, colors, labels):
    """Reliability diagram, seeds pooled, bins with at least :data:`MIN_BIN_IMAGES` images."""
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='perfectly calibrated')
    shown = None
    for arm, per in ev['curves'].items():
        mean = (per.get(stage) or {}).get('mean')
        if not mean:
            continue
        counts = mean.get('count') or [MIN_BIN_IMAGES] * len(mean['confidence'])
        least = shown = max(MIN_BIN_IMAGES, math.ceil(MIN_BIN_SHARE * sum(counts)))
        pts = [(c, a) for c, a, n in zip(mean['confidence'], mean['accuracy'], counts)
               if c is not None and a is not None and n >= least]
        if pts:
            ax.plot(*zip(*pts), 'o-', ms=4, color=colors[arm], label=labels[arm])
    ax.set(xlabel='confidence (top-1 probability)', ylabel='accuracy', xlim=(0, 1),
           ylim=(0, 1.02))
    ax.set_title(f'{stage}: reliability, seeds pooled' +
                 (f' (bins ≥ {shown:.0f} images)' if shown else ''), fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(handles=ax.get_lines()[:1], fontsize=8, loc='upper left')


def missing_stages(results):
    """``{stage: why}`` of the evaluation stages without a result in any arm: no empty panel is
    drawn for them, the figure says why instead."""
    ev = results.get('evaluation') or {}
    skipped = ev.get('skipped') or {}
    out = {}
    for name in ev.get('stages') or {}:
        if not any((per.get(name) or {}).get('mean') for per in ev['curves'].values()):
            out[name] = skipped.get(name, 'no finished evaluation')
    return out


def evaluation_panels(results, colors):
    """``[draw(ax)]`` of the evaluation stages' curves, in a fixed order of kinds."""
    ev = results.get('evaluation') or {}
    missing = missing_stages(results)
    stages = {n: s for n, s in (ev.get('stages') or {}).items() if n not in missing}
    labels = {n: a['label'] for n, a in results['arms'].items()}
    by_kind = {}
    for name, s in stages.items():
        by_kind.setdefault(s['kind'], []).append(name)
    panels = []
    for stage in by_kind.get('occlusion', []):
        panels.append(lambda ax, s=stage: curve_panel(
            ax, ev, s, 'mean', colors, labels, 'fraction of patch tokens blanked', 'top-1 (%)',
            f'{s}: top-1 (mean ± std over seeds)', (0.0, 100.0)))
    for stage in by_kind.get('patch_shuffle', []):
        panels.append(lambda ax, s=stage: shuffle_panel(ax, ev, s, colors, labels))
    for stage in by_kind.get('corruption', []) + by_kind.get('imagenet_c', []):
        panels.append(lambda ax, s=stage: curve_panel(
            ax, ev, s, 'mean', colors, labels, 'severity',
            'top-1 error (%), mean over corruptions', f'{s}: error per severity (mean ± std)',
            (0.0, 100.0)))
    for stage in by_kind.get('calibration', []):
        panels.append(lambda ax, s=stage: reliability_panel(ax, ev, s, colors, labels))
    panels += fidelity_panels(results, ev, by_kind.get('label_fidelity', []), colors, labels)
    return panels


# ---- the figure -----------------------------------------------------------------------------
def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend; imported here, not at the top: it
    takes about a second, and only the commands that write results.png need it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def figure(results):
    """The results figure (matplotlib, Agg backend), not yet written; :func:`plot` writes it."""
    plt = _pyplot()

    names = list(results['arms'])
    colors = arm_colors(names)
    stages = (results.get('evaluation') or {}).get('stages') or {}
    seed_metrics = [m for m in results['metrics'] if m['stage'] not in stages]
    comps = [c for c in results['comparisons'] if c.get('mean') is not None]
    fams = {}
    for c in comps:
        fams.setdefault(family(c['metric'])[0], []).append(c)
    panels = evaluation_panels(results, colors)
    rows = difference_rows(comps)

    # sections top to bottom: (panels, columns, row height in inches)
    sections = [(len(seed_metrics), min(3, len(seed_metrics)), 4.2),
                (len(fams), min(4, len(fams)), max(2.6, 0.34 * len(rows) + 1.6)),
                (len(panels), 3, 3.9)]
    sections = [(n, cols, -(-n // cols), h) for n, cols, h in sections if n]
    heights = [rows_ * h for _, _, rows_, h in sections]
    fig = plt.figure(figsize=(16, sum(heights) + 1.3), layout='constrained')
    outer = fig.add_gridspec(len(sections), 1, height_ratios=heights)
    axes = []
    for (n, cols, nrows, _), spec in zip(sections, outer):
        grid = spec.subgridspec(nrows, cols)
        axes.append([grid[k // cols, k % cols] for k in range(n)])
    axes = iter(axes)
    if seed_metrics:
        for spec, metric in zip(next(axes), seed_metrics):
            seeds_panel(fig.add_subplot(spec), results, metric, colors)
    if fams:
        first, cols = None, min(4, len(fams))
        for k, (spec, (fam, members)) in enumerate(zip(next(axes), fams.items())):
            ax = fig.add_subplot(spec, sharey=first)
            first = first or ax
            differences_panel(ax, members, rows, fam, family(members[0]['metric'])[1], colors,
                              show_labels=k % cols == 0)
    if panels:
        for spec, draw in zip(next(axes), panels):
            draw(fig.add_subplot(spec))

    handles = [plt.Line2D([], [], marker='s', ls='', color=colors[n], ms=8,
                          label=results['arms'][n]['label']) for n in names]
    if comps:
        handles += [plt.Line2D([], [], marker='s', ls='', color='k', ms=7,
                               label='filled: 95% CI excludes 0'),
                    plt.Line2D([], [], marker='s', ls='', color='k', ms=7,
                               markerfacecolor='white', label='hollow: includes 0 (seed noise)')]
    seeds = ', '.join(str(s) for s in results['seeds'])
    # the title heads the key (a suptitle and an outside legend would share the top)
    fig.legend(handles=handles, loc='outside upper center', ncols=min(len(handles), 5),
               fontsize=9, frameon=False, title=f'benchmark {results["suite"]}: seeds {seeds}',
               title_fontsize=13)
    missing = missing_stages(results)
    if missing:
        fig.legend(handles=[], loc='outside lower center', frameon=False, fontsize=9,
                   title='not drawn, no results: ' + '; '.join(
                       f'{name} ({why})' for name, why in missing.items()),
                   title_fontsize=10)
    return fig


def plot(results, path):
    """Write :func:`figure` of ``results`` to ``path`` (PNG)."""
    fig = figure(results)
    workdir.write_figure(fig, path)
    _pyplot().close(fig)
