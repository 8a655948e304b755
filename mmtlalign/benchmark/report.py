"""Aggregate a suite's cells over seeds and write ``results.json``, ``results.md``, ``results.png``.

Per arm and metric: the per-seed values, mean and sample standard deviation. Per comparison
(arm against its baseline, and any extra pair the suite names): the paired difference over the
seeds both ran, with its 95% t interval. The verdict names a difference only when that interval
excludes 0; otherwise it says the arms are within the seed noise.

The evaluation stages' metrics are aggregated like the others; :func:`summarise` adds their
curves per arm (occlusion, corruption error per severity, reliability bins: the mean over seeds),
:func:`compact_lines` / :func:`evaluation_report` their one-line summaries. ``results.png`` is
drawn by :mod:`.plots`.
"""
import os.path as osp
import time

import numpy as np

from .. import workdir
from .evaluations import read_process
from .plots import plot
from .stats import mean_std, paired_difference

#: metrics where lower is better (the compact lines say so)
LOWER_IS_BETTER = ('corruption error', 'ECE', 'NLL', 'ImageNet-C mCE', 'ImageNet-C mCE (unnorm.)')
#: metric-name prefixes where lower is better (label_fidelity: ``share MAE <rule>[ vs <rule>]``)
LOWER_IS_BETTER_PREFIXES = ('share MAE ',)


def lower_is_better(name):
    """Whether a smaller value of the metric ``name`` is better."""
    return name in LOWER_IS_BETTER or name.startswith(LOWER_IS_BETTER_PREFIXES)


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
    within = within_model_lines(results)
    if within:  # label_fidelity: rule vs rule on the same checkpoints
        lines += ['## Label rules compared within each model (label_fidelity)', '',
                  'Per arm: mean over its seeds of the difference of two rules\' share MAE '
                  'on the same checkpoint, [95% t interval]; negative: closer to the content '
                  'share than the baseline rule.', '']
        lines += [f'- {head}: {text}' for head, text in within] + ['']
    for name, reason in ((results.get('evaluation') or {}).get('skipped') or {}).items():
        lines.append(f'- evaluation stage `{name}`: skipped, not scored ({reason})')
    lines += [f'- {line}' for line in failure_lines(results)]
    workdir.write_text(path, '\n'.join(lines))


def write_json(results, path):
    workdir.write_json(path, results, indent=2)


def write_all(results, work_root):
    """results.json, results.md and results.png in ``work_root``; returns their paths."""
    paths = {ext: osp.join(work_root, f'results.{ext}') for ext in ('json', 'md', 'png')}
    write_json(results, paths['json'])
    write_markdown(results, paths['md'])
    plot(results, paths['png'])
    return paths


# ------------------------------------------------------------------------------------------
# evaluation stages: curves per arm, compact lines
# ------------------------------------------------------------------------------------------
def _mean_curve(curves):
    """Element-wise mean and std over seeds of equally long lists (None where unequal)."""
    if not curves or len({len(c) for c in curves}) != 1:
        return None, None
    arr = np.asarray(curves, float)
    return arr.mean(0).tolist(), (arr.std(0, ddof=1).tolist() if len(arr) > 1 else None)


def summarise(suite, cells, skipped=None):
    """``results['evaluation']``: the stages, what was skipped, and per arm the curves of each
    stage (per seed and the mean over seeds)."""
    stages = getattr(suite, 'evaluation', [])
    if not stages and not skipped:
        return None
    out = dict(stages={s.name: dict(kind=s.kind, label=s.label, spec=s.spec,
                                    metrics=[m.name for m in s.metrics]) for s in stages},
               skipped=dict(skipped or {}), curves={}, wall_s={})
    for arm in suite.arms:
        per_stage = {}
        for stage in stages:
            done = [c for c in cells if c.arm == arm.name and c.stage == stage.name and
                    c.state == 'done']
            if not done:
                continue
            curves = {str(c.seed): c.result.get('curves', {}) for c in done}
            per_stage[stage.name] = dict(per_seed=curves, mean=_family_mean(stage.kind,
                                                                            curves))
        out['curves'][arm.name] = per_stage
        walls, cpus = [], []
        for c in cells:
            if c.arm == arm.name and c.stage == 'train':
                proc = read_process(c)
                if proc is not None:
                    walls.append(proc.get('wall_s'))
                    cpus.append(proc.get('cpu_s'))
        out['wall_s'][arm.name] = [w for w in walls if w is not None]
        out.setdefault('cpu_s', {})[arm.name] = [w for w in cpus if w is not None]
    within = within_model(suite, cells)
    if within:
        out['within_model'] = within
    out['failed'] = {}  # stage -> the cells whose evaluation of it failed (not in the numbers)
    for c in cells:
        if c.state == 'failed' and c.stage in out['stages']:
            out['failed'].setdefault(c.stage, []).append(f'{c.arm} seed {c.seed}')
    return out


def within_model(suite, cells):
    """label_fidelity stages: per stage, arm and rule, the paired difference over seeds of
    the rule's share MAE minus the baseline rule's (area) *on the same model*: every rule is
    scored on each checkpoint, so the seed noise of training cancels.

    Returns:
        list[dict]: ``stage``, ``arm``, ``rule``, ``baseline``, ``metric`` and the fields of
        :func:`~.stats.paired_difference` (MAE in percentage points of the partner share).
    """
    out = []
    for stage in getattr(suite, 'evaluation', []):
        if stage.kind != 'label_fidelity':
            continue
        names = [m.name for m in stage.metrics]
        base = next((n[len('share MAE '):].split(' vs ')[1] for n in names if ' vs ' in n),
                    None)
        for arm in suite.arms:
            per_seed = {c.seed: c.result.get('metrics', {}) for c in cells
                        if c.arm == arm.name and c.stage == stage.name and c.state == 'done'}
            for name in names:
                if ' vs ' not in name:
                    continue
                rule = name[len('share MAE '):].split(' vs ')[0]
                a = {s: m[f'share MAE {rule}'] for s, m in per_seed.items()
                     if m.get(f'share MAE {rule}') is not None}
                b = {s: m[f'share MAE {base}'] for s, m in per_seed.items()
                     if m.get(f'share MAE {base}') is not None}
                if a and b:
                    out.append(dict(stage=stage.name, arm=arm.name, rule=rule, baseline=base,
                                    metric=name, **paired_difference(a, b)))
    return out


def within_model_lines(results):
    """``(head, text)`` lines of :func:`within_model`: per rule, each arm's mean paired
    difference over its seeds with the 95% interval."""
    rows = (results.get('evaluation') or {}).get('within_model') or []
    lines = []
    for metric in dict.fromkeys(r['metric'] for r in rows):
        parts = []
        for r in rows:
            if r['metric'] != metric or r['mean'] is None:
                continue
            ci = f' [{r["ci"][0]:+.2f}, {r["ci"][1]:+.2f}]' if r['ci'] else ''
            beyond = ', beyond the noise' if r['excludes_zero'] else ''
            parts.append(f'{results["arms"][r["arm"]]["label"]} {r["mean"]:+.2f}{ci}{beyond}')
        rule, base = metric[len('share MAE '):].split(' vs ')
        lines.append((f'{rule} - {base} share MAE, same model (pp, paired over seeds)',
                       ' | '.join(parts)))
    return lines


def _family_mean(kind, curves):
    """The mean over seeds of a stage's curve (occlusion top-1 per fraction, corruption error
    per severity, reliability bins)."""
    seeds = list(curves.values())
    if kind == 'occlusion':
        mean, std = _mean_curve([c['top1'] for c in seeds])
        return dict(x=seeds[0]['fraction'], y=mean, std=std)
    if kind in ('corruption', 'imagenet_c'):
        mean, std = _mean_curve([c['error'] for c in seeds])
        return dict(x=seeds[0]['severity'], y=mean, std=std)
    if kind == 'patch_shuffle':
        mean, std = _mean_curve([c['top1'] for c in seeds])
        return dict(x=seeds[0]['grid'], y=mean, std=std)
    if kind == 'label_fidelity':  # the scatter's points, seeds pooled
        rules = list(seeds[0].get('rules') or {})
        points = [c.get('points') or {} for c in seeds]
        return dict(rules=rules, content=[v for p in points for v in p.get('content', [])],
                    shares={r: [v for p in points for v in p.get(r, [])] for r in rules})
    if kind == 'calibration':  # pool the seeds' bins, weighted by count
        bins = [c['bins'] for c in seeds]
        n = np.sum([b['count'] for b in bins], 0)
        acc = [sum((b['accuracy'][i] or 0) * b['count'][i] for b in bins) / n[i] if n[i]
               else None for i in range(len(n))]
        conf = [sum((b['confidence'][i] or 0) * b['count'][i] for b in bins) / n[i] if n[i]
                else None for i in range(len(n))]
        return dict(edges=bins[0]['edges'], accuracy=acc, confidence=conf,
                    count=n.tolist())
    return None


def _fmt_mean(m):
    if m['mean'] is None:
        return '-'
    return f'{m["mean"]:.2f}' + (f' ± {m["std"]:.2f}' if m['std'] is not None else '')


def compact_lines(results):
    """One line per evaluation metric: per arm mean ± std, and Δ vs its baseline (95% CI)."""
    ev = results.get('evaluation') or {}
    stages = ev.get('stages', {})
    lines = []
    for metric in results['metrics']:
        if metric['stage'] not in stages:
            continue
        parts = []
        for name, arm in results['arms'].items():
            m = arm['metrics'][metric['name']]
            text = f'{arm["label"]} {_fmt_mean(m)}'
            comp = next((c for c in results['comparisons'] if c['arm'] == name and
                         c['baseline'] == arm['baseline'] and c['metric'] == metric['name']),
                        None)
            if comp and comp['mean'] is not None:
                ci = (f' [{comp["ci"][0]:+.2f}, {comp["ci"][1]:+.2f}]' if comp['ci'] else '')
                beyond = ', beyond the noise' if comp['excludes_zero'] else ''
                text += f' (Δ {comp["mean"]:+.2f}{ci}{beyond})'
            parts.append(text)
        better = 'lower is better' if lower_is_better(metric['name']) else 'higher is better'
        lines.append((f'{metric["name"]} ({better})', ' | '.join(parts)))
    lines += within_model_lines(results)
    width = max((len(a) for a, _ in lines), default=0)
    out = [f'{a.ljust(width)}  {b}' for a, b in lines]
    for name, reason in ev.get('skipped', {}).items():
        out.append(f'{name}: skipped, not scored ({reason})')
    return out + failure_lines(results)


def failure_lines(results):
    """What these numbers lack: the cells and evaluation stages that failed, each with the
    log that holds its error."""
    out, ev = [], results.get('evaluation') or {}
    for c in results['cells']:
        if c['stage'] not in ev.get('stages', {}) and c['state'] != 'done':
            what = 'training' if c['stage'] == 'train' else c['stage']
            out.append(f'{c["arm"]} seed {c["seed"]}: {what} did not finish, not in the numbers'
                       f'{" (nor its evaluation)" if c["stage"] == "train" and ev else ""}; '
                       f'the error is in {c["work_dir"]}/benchmark_output.log')
    for stage, where in (ev.get('failed') or {}).items():
        out.append(f'evaluation stage {stage}: failed for {", ".join(where)}, not in the '
                   'numbers; the error is in <cell>/evaluation/evaluate_output.log')
    return out


#: what each evaluation metric shows, in plain words (the main job prints these)
EXPLAIN = {
    'occlusion AUC': 'mean top-1 with 10-90% of the patch tokens blanked (grey): how much '
                     'the model still sees when parts of the object are hidden',
    'shuffle 2x2 top-1': 'top-1 with the image cut into 2x2 blocks in random order: '
                         'reliance on global layout vs local texture',
    'shuffle 4x4 top-1': 'the same with 4x4 blocks (each block one 7-px token here)',
    'corruption error': 'top-1 error under 15 ImageNet-C corruptions (noise, blur, weather, '
                        'digital) x 5 severities, averaged: robustness to image damage',
    'ECE': 'expected calibration error, 15 bins: the gap between how sure the model is and '
           'how often it is right (0 = its confidence can be trusted)',
    'NLL': 'negative log-likelihood of the true class: penalises confident mistakes',
}


EXPLAIN_LABEL_FIDELITY = (
    'on CutMix pairs of test images whose foreground is known, the partner share each label '
    'rule gives on the same model against the content share (the partner\'s fraction of the '
    'visible foreground): mean absolute error in percentage points (lower: the rule labels '
    'what the image shows) and correlation')


def evaluation_report(results):
    """The main job's lines after its table: one per evaluation metric, what each shows,
    and the added time per cell."""
    lines = compact_lines(results)
    if not lines:
        return []
    out = ['', 'Beyond clean top-1 (per arm: mean ± std over seeds; Δ vs its baseline, paired '
           'over seeds, [95% CI]):'] + ['  ' + line for line in lines]
    shown = [m['name'] for m in results['metrics'] if m['name'] in EXPLAIN and
             m['stage'] in (results.get('evaluation') or {}).get('stages', {})]
    out += [f'  {name}: {EXPLAIN[name]}.' for name in shown]
    if any(s['kind'] == 'label_fidelity' for s in results['evaluation']['stages'].values()):
        out.append(f'  share MAE / share r <rule>: {EXPLAIN_LABEL_FIDELITY}.')
    walls = [w for ws in (results['evaluation'].get('wall_s') or {}).values() for w in ws]
    cpus = [w for ws in (results['evaluation'].get('cpu_s') or {}).values() for w in ws]
    if walls:
        cpu = (f', {np.mean(cpus):.0f} s of CPU ({min(cpus):.0f}-{max(cpus):.0f} s: the '
               'first cells compute the corrupted images, the others reuse them)'
               if cpus else '')
        out.append(f'  evaluation time per cell: {np.mean(walls):.0f} s wall on average{cpu}; '
                   'one process per cell, after the training cells.')
    return out
