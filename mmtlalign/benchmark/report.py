"""Aggregate a suite's cells over seeds and write ``results.json``, ``results.md``, ``results.png``.

Per arm and metric: the per-seed values, mean and sample standard deviation. Per comparison
(arm against its baseline, and any extra pair the suite names): the paired difference over the
seeds both ran, with its 95% t interval. The verdict names a difference only when that interval
excludes 0; otherwise it says the arms are within the seed noise.
"""
import math
import os.path as osp
import time

from .. import workdir
from .stats import mean_std, paired_difference, t_quantile


def aggregate(suite, cells, work_root):
    """Results of the finished cells, as the dict written to ``results.json``."""
    arms = {}
    for arm in suite.arms:
        per_metric = {}
        for m in suite.metrics:
            per_seed = {c.seed: c.result['metrics'][m.name] for c in cells
                        if c.arm == arm.name and c.stage == m.stage and c.state == 'done'
                        and m.name in c.result.get('metrics', {})}
            mean, std = mean_std([per_seed[s] for s in sorted(per_seed)])
            per_metric[m.name] = dict(per_seed={str(s): per_seed[s] for s in sorted(per_seed)},
                                      mean=mean, std=std, n=len(per_seed))
        arms[arm.name] = dict(label=arm.label, config=osp.relpath(arm.config),
                              baseline=arm.baseline, reference=arm.reference,
                              metrics=per_metric)
    comparisons = []
    for name, ref in suite.comparisons:
        for m in suite.metrics:
            a = {int(s): v for s, v in arms[name]['metrics'][m.name]['per_seed'].items()}
            b = {int(s): v for s, v in arms[ref]['metrics'][m.name]['per_seed'].items()}
            comparisons.append(dict(arm=name, baseline=ref, metric=m.name,
                                    label=f'{arms[name]["label"]} - {arms[ref]["label"]}',
                                    **paired_difference(a, b)))
    results = dict(
        suite=suite.name, suite_file=osp.relpath(suite.path), work_dir=work_root,
        seeds=suite.seeds, created=time.strftime('%Y-%m-%d %H:%M:%S'),
        metrics=[dict(name=m.name, key=m.key, stage=m.stage, scale=m.scale,
                      reference=m.reference) for m in suite.metrics],
        arms=arms, comparisons=comparisons,
        cells=[dict(arm=c.arm, seed=c.seed, stage=c.stage, state=c.state,
                    work_dir=c.work_dir, **c.result) for c in cells])
    results['verdict'] = verdict(results)
    return results


def _fmt(v, digits=2, sign=False):
    if v is None:
        return '-'
    return f'{v:+.{digits}f}' if sign else f'{v:.{digits}f}'


def _ci(c):
    if c['ci'] is None:
        return f'{_fmt(c["mean"], sign=True)} (CI needs >= 2 seeds)' if c['n'] else '-'
    return f'{_fmt(c["mean"], sign=True)} [{_fmt(c["ci"][0], sign=True)}, ' \
           f'{_fmt(c["ci"][1], sign=True)}]'


def verdict(results, metric=None):
    """One line: do the paired differences of ``metric`` (default: the first) exceed the seed
    noise? A difference is named as real only when its 95% interval excludes 0."""
    metric = metric or results['metrics'][0]['name']
    comps = [c for c in results['comparisons'] if c['metric'] == metric]
    if not comps:
        return f'Verdict ({metric}): no comparison to make (the suite ran no baseline pair).'
    if all(c['n'] < 2 for c in comps):
        return (f'Verdict ({metric}): no verdict - fewer than 2 paired seeds, so the seed noise '
                'cannot be estimated; run more seeds.')
    parts, real = [], []
    for c in comps:
        if c['n'] < 2:
            parts.append(f'{c["label"]}: {c["n"]} paired seed(s), no interval')
            continue
        word = 'above' if c['mean'] > 0 else 'below'
        parts.append(f'{c["label"]} {_ci(c)}')
        if c['excludes_zero']:
            real.append(f'{c["label"].split(" - ")[0]} is {word} '
                        f'{c["label"].split(" - ")[1]}')
    n = max(c['n'] for c in comps)
    head = f'Verdict ({metric}, {n} paired seeds, 95% CI): '
    if real:
        tail = '; '.join(real) + ' beyond the seed noise (CI excludes 0); the rest is within it'
        if len(real) == len(parts):
            tail = '; '.join(real) + ' beyond the seed noise (CI excludes 0)'
    else:
        tail = 'no difference exceeds the seed noise (every CI includes 0): no winner'
    return head + tail + ' -- ' + '; '.join(parts) + '.'


def _references(results, metric):
    """Reference columns of ``metric``: the arm's own (first metric only) and the metric's."""
    first = results['metrics'][0]['name'] == metric['name']
    sources = []
    for arm in results['arms'].values():
        for src in (arm['reference'] if first else {}):
            if src not in sources:
                sources.append(src)
    for src in metric.get('reference') or {}:
        if src not in sources:
            sources.append(src)
    return sources


def table_rows(results, metric):
    """(header, rows) of one metric's table: arm | seeds | mean ± std | Δ (95% CI) | refs."""
    sources = _references(results, metric)
    first = results['metrics'][0]['name'] == metric['name']
    head = ['arm', 'per seed', 'mean ± std', 'Δ vs baseline (95% CI)'] + sources
    rows = []
    for name, arm in results['arms'].items():
        m = arm['metrics'][metric['name']]
        seeds = ', '.join(f'{v:.2f}' for v in m['per_seed'].values()) or '-'
        mean = '-' if m['mean'] is None else \
            f'{m["mean"]:.2f}' + (f' ± {m["std"]:.2f}' if m['std'] is not None else '')
        comp = next((c for c in results['comparisons'] if c['arm'] == name and
                     c['baseline'] == arm['baseline'] and c['metric'] == metric['name']), None)
        delta = f'{_ci(comp)} vs {results["arms"][arm["baseline"]]["label"]}' if comp else ''
        refs = []
        for src in sources:
            v = (arm['reference'].get(src) if first else None)
            v = v if v is not None else (metric.get('reference') or {}).get(src)
            refs.append('-' if v is None else str(v))
        rows.append([arm['label'], f'{seeds} (n={m["n"]})', mean, delta] + refs)
    return head, rows


def text_table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: '  '.join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa
    return '\n'.join([line(head), '  '.join('-' * w for w in widths)] + [line(r) for r in rows])


def extra_comparisons(results, metric):
    """Comparisons that are not an arm against its own baseline (e.g. TL-Align vs TransMix)."""
    return [c for c in results['comparisons'] if c['metric'] == metric['name'] and
            results['arms'][c['arm']]['baseline'] != c['baseline']]


def write_markdown(results, path):
    lines = [f'# Benchmark `{results["suite"]}`', '',
             f'Suite `{results["suite_file"]}`, seeds {results["seeds"]}, work dir '
             f'`{results["work_dir"]}` ({results["created"]}). Per seed: the metric at the '
             'last validation of each cell. Δ: paired difference over the seeds both arms ran '
             '(same seed = same initial weights, data order and mixing draws), mean '
             '[95% t interval].', '']
    for metric in results['metrics']:
        head, rows = table_rows(results, metric)
        lines += [f'## {metric["name"]}' + ('' if metric['stage'] == 'train'
                                            else f' ({metric["stage"]})'), '',
                  '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
        extra = extra_comparisons(results, metric)
        if extra:
            lines += [''] + [f'- {c["label"]}: {_ci(c)} ({c["n"]} paired seeds)' for c in extra]
        lines += ['', verdict(results, metric['name']), '']
    for name, reason in ((results.get('evaluation') or {}).get('skipped') or {}).items():
        lines.append(f'- evaluation stage `{name}`: skipped, not scored ({reason})')
    workdir.write_text(path, '\n'.join(lines))


def write_json(results, path):
    workdir.write_json(path, results, indent=2)


def plot(results, path):
    """Per metric: per-seed values joined by seed across arms, with mean ± 95% CI (top); paired
    differences against the baseline with their CI and the zero line (bottom)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from .stages import families  # evaluation stages: a panel per metric family, below
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
    import numpy as np
    per_row = min(3, npanels)
    extra_rows = -(-npanels // per_row)
    fig = plt.figure(figsize=(max(width, 5.5 * per_row), 4 * (nrows + extra_rows)))
    grid = fig.add_gridspec(nrows + extra_rows, 1)
    top = grid[:nrows].subgridspec(nrows, ncols)
    axes = np.array([[fig.add_subplot(top[r, c]) for c in range(ncols)] for r in range(nrows)])
    bottom = grid[nrows:].subgridspec(extra_rows, per_row)
    extra = [fig.add_subplot(bottom[k // per_row, k % per_row]) for k in range(npanels)]
    return fig, axes, extra


def write_all(results, work_root):
    """results.json, results.md and results.png in ``work_root``; returns their paths."""
    paths = {ext: osp.join(work_root, f'results.{ext}') for ext in ('json', 'md', 'png')}
    write_json(results, paths['json'])
    write_markdown(results, paths['md'])
    plot(results, paths['png'])
    return paths
