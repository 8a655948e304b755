"""``results.png``: per metric the per-seed values and the paired differences, and below them
one panel per evaluation metric family (occlusion, patch shuffle, corruption error per severity,
reliability diagrams, the evaluation metrics' paired differences).

It draws the ``results`` dict of :func:`~.report.aggregate` (with ``results['evaluation']``
from :func:`~.report.summarise`), nothing else: a plot can be redrawn from ``results.json``.
"""
import math

import numpy as np

from .. import workdir
from .stats import t_quantile


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend; imported here, not at the top: it
    takes about a second, and only the commands that write results.png need it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot(results, path):
    """Per metric: per-seed values joined by seed across arms, with mean ± 95% CI (top); paired
    differences against the baseline with their CI and the zero line (bottom)."""
    plt = _pyplot()
    evaluation = (results.get('evaluation') or {}).get('stages', {})
    metrics = [m for m in results['metrics'] if m['stage'] not in evaluation]
    panels = families(results)
    has_comp = bool(results['comparisons'])
    nrows = 2 if has_comp else 1
    fig, axes, extra = _figure(plt, nrows, len(metrics), len(panels),
                               max(5.5, 2.2 * len(results['arms'])) * len(metrics))
    names = list(results['arms'])
    seeds = [str(s) for s in results['seeds']]
    colors = plt.cm.tab10.colors
    for j, metric in enumerate(metrics):
        ax = axes[0, j]
        for k, seed in enumerate(seeds):
            xs = [i for i, n in enumerate(names)
                  if seed in results['arms'][n]['metrics'][metric['name']]['per_seed']]
            ys = [results['arms'][names[i]]['metrics'][metric['name']]['per_seed'][seed]
                  for i in xs]
            ax.plot(xs, ys, 'o-', color=colors[k % 10], alpha=0.55, lw=1, ms=5,
                    label=f'seed {seed}')
        for i, n in enumerate(names):
            m = results['arms'][n]['metrics'][metric['name']]
            if m['mean'] is None:
                continue
            half = (t_quantile(0.975, m['n'] - 1) * m['std'] / math.sqrt(m['n'])
                    if m['std'] is not None else 0)
            ax.errorbar(i + 0.18, m['mean'], yerr=half, fmt='s', color='k', capsize=5,
                        label='mean ± 95% CI' if i == 0 else None)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([results['arms'][n]['label'] for n in names])
        ax.set_xlim(-0.5, len(names) - 0.3)
        ax.set_ylabel(metric['name'])
        ax.set_title(f'{metric["name"]}' + ('' if metric['stage'] == 'train'
                                            else f' ({metric["stage"]})') +
                     ': per seed (lines join a seed)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if not has_comp:
            continue
        ax = axes[1, j]
        comps = [c for c in results['comparisons'] if c['metric'] == metric['name']]
        for i, c in enumerate(comps):
            ax.plot([i] * c['n'], c['diffs'], 'o', color='tab:gray', alpha=0.6, ms=5,
                    label='per seed' if i == 0 else None)
            if c['ci'] is not None:
                color = 'tab:green' if c['excludes_zero'] else 'tab:orange'
                ax.errorbar(i + 0.15, c['mean'], yerr=[[c['mean'] - c['ci'][0]],
                                                       [c['ci'][1] - c['mean']]],
                            fmt='s', color=color, capsize=6,
                            label=('CI excludes 0' if c['excludes_zero'] else
                                   'CI includes 0 (seed noise)'))
        ax.axhline(0, color='k', lw=1)
        ax.set_xticks(range(len(comps)))
        ax.set_xticklabels([c['label'] for c in comps], fontsize=8)
        ax.set_xlim(-0.5, len(comps) - 0.3)
        ax.set_ylabel(f'Δ {metric["name"]} (paired)')
        ax.set_title('paired difference over seeds, mean ± 95% CI')
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    for draw, ax in zip(panels, extra):
        draw(ax)
    fig.suptitle(f'benchmark {results["suite"]}: seeds {", ".join(seeds)}')
    fig.tight_layout()
    workdir.write_figure(fig, path)
    plt.close(fig)


def _figure(plt, nrows, ncols, npanels, width):
    """(figure, ``(nrows, ncols)`` axes of the per-metric panels, axes of ``npanels`` extra
    panels in rows of up to 3 below them)."""
    if not npanels:
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4 * nrows), squeeze=False)
        return fig, axes, []
    per_row = min(3, npanels)
    extra_rows = -(-npanels // per_row)
    fig = plt.figure(figsize=(max(width, 5.5 * per_row), 4 * (nrows + extra_rows)))
    grid = fig.add_gridspec(nrows + extra_rows, 1)
    top = grid[:nrows].subgridspec(nrows, ncols)
    axes = np.array([[fig.add_subplot(top[r, c]) for c in range(ncols)] for r in range(nrows)])
    bottom = grid[nrows:].subgridspec(extra_rows, per_row)
    extra = [fig.add_subplot(bottom[k // per_row, k % per_row]) for k in range(npanels)]
    return fig, axes, extra


def families(results):
    """The results.png panels of the evaluation: a list of ``draw(ax)`` functions."""
    ev = results.get('evaluation') or {}
    if not ev.get('stages'):
        return []
    by_kind = {}
    for name, s in ev['stages'].items():
        by_kind.setdefault(s['kind'], []).append(name)
    labels = {n: a['label'] for n, a in results['arms'].items()}
    plt = _pyplot()
    colors = dict(zip(results['arms'], plt.cm.tab10.colors))
    panels = []

    def curve_panel(stage, xlabel, ylabel, title):
        def draw(ax):
            for arm, per in ev['curves'].items():
                mean = (per.get(stage) or {}).get('mean')
                if not mean or mean.get('y') is None:
                    continue
                ax.errorbar(mean['x'], mean['y'], yerr=mean.get('std'), fmt='o-', ms=4,
                            capsize=3, color=colors[arm], label=labels[arm])
            ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return draw

    for stage in by_kind.get('occlusion', []):
        panels.append(curve_panel(stage, 'fraction of patch tokens blanked', 'top-1 (%)',
                                  f'{stage}: top-1 vs occlusion (mean ± std over seeds)'))
    for stage in by_kind.get('patch_shuffle', []):
        def bars(ax, stage=stage):
            arms = [a for a, per in ev['curves'].items() if (per.get(stage) or {}).get('mean')]
            width = 0.8 / max(1, len(arms))
            for k, arm in enumerate(arms):
                mean = ev['curves'][arm][stage]['mean']
                if mean.get('y') is None:
                    continue
                xs = np.arange(len(mean['x'])) + (k - (len(arms) - 1) / 2) * width
                ax.bar(xs, mean['y'], width, yerr=mean.get('std'), capsize=3,
                       color=colors[arm], label=labels[arm])
                ax.set_xticks(range(len(mean['x'])))
                ax.set_xticklabels([f'{g}x{g} blocks' for g in mean['x']])
            ax.set(ylabel='top-1 (%)', title=f'{stage}: top-1 with shuffled blocks '
                   '(mean ± std)')
            ax.grid(alpha=0.3, axis='y')
            ax.legend(fontsize=8)
        panels.append(bars)
    for stage in by_kind.get('corruption', []) + by_kind.get('imagenet_c', []):
        panels.append(curve_panel(stage, 'severity', 'top-1 error (%), mean over corruptions',
                                  f'{stage}: corruption error per severity'))
    for stage in by_kind.get('calibration', []):
        def draw(ax, stage=stage):
            ax.plot([0, 1], [0, 1], 'k--', lw=1, label='perfectly calibrated')
            for arm, per in ev['curves'].items():
                mean = (per.get(stage) or {}).get('mean')
                if not mean:
                    continue
                pts = [(c, a) for c, a in zip(mean['confidence'], mean['accuracy'])
                       if c is not None]
                if pts:
                    ax.plot(*zip(*pts), 'o-', ms=4, color=colors[arm], label=labels[arm])
            ax.set(xlabel='confidence (top-1 probability)', ylabel='accuracy',
                   title=f'{stage}: reliability diagram (seeds pooled)', xlim=(0, 1),
                   ylim=(0, 1))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        panels.append(draw)
    comps = [c for c in results['comparisons'] if c['metric'] in
             {m for s in ev['stages'].values() for m in s['metrics']} and c['ci'] is not None]
    if comps:
        def forest(ax):
            for i, c in enumerate(comps):
                color = 'tab:green' if c['excludes_zero'] else 'tab:orange'
                ax.errorbar(c['mean'], i, xerr=[[c['mean'] - c['ci'][0]],
                                                [c['ci'][1] - c['mean']]],
                            fmt='s', color=color, capsize=4)
            ax.axvline(0, color='k', lw=1)
            ax.set_yticks(range(len(comps)))
            ax.set_yticklabels([f'{c["metric"]}: {c["label"]}' for c in comps], fontsize=7)
            ax.set(xlabel='paired Δ (95% CI; green: excludes 0)',
                   title='evaluation metrics: paired differences')
            ax.grid(alpha=0.3)
        panels.append(forest)
    return panels
