"""Evaluation stages of a suite: run after a cell's training, on its final checkpoint.

A suite lists them as ``evaluation = [dict(kind='occlusion'), dict(kind='imagenet_a',
data_root='data/imagenet-a'), ...]`` (each may name the ``arms`` it applies to; default every
arm); the kinds and their parameters are those of :mod:`mmtlalign.evaluation.stages`. For every
finished training cell the runner starts one ``tools/analysis/evaluate.py`` process with the
stages it still lacks; each stage writes ``WORK/<arm>/seed<seed>/evaluation/<stage>.json``, and
a rerun skips the stages whose file holds the same settings (stage, config, options,
checkpoint). A stage whose dataset is missing is reported once and skipped for every cell (its
metrics leave the results: never scored).

The stage metrics join the suite's metrics (``Metric.stage`` = the stage name), so per seed,
mean ± std, paired differences with 95% CIs and verdicts come out of
:func:`~mmtlalign.benchmark.report.aggregate` like top-1; :func:`summarise` adds the curves
(occlusion, corruption error per severity, reliability diagrams) that ``results.png`` plots
per metric family.

Written and read back through :mod:`mmtlalign.workdir` (``process.json``, the log, the shared
``WORK/evaluation_cache`` folder made without following a link); the stages' result files are
schema-checked (:func:`mmtlalign.evaluation.cli.read_result`).
"""
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, field

import numpy as np

from .. import workdir
from ..cli.paths import tool_path
from ..errors import UserInputError

#: metrics where lower is better (the compact lines say so)
LOWER_IS_BETTER = ('corruption error', 'ECE', 'NLL', 'ImageNet-C mCE', 'ImageNet-C mCE (unnorm.)')
EVAL_DIR = 'evaluation'
EVAL_LOG = 'evaluate_output.log'
PROCESS = 'process.json'
PROCESS_SCHEMA = {'wall_s': workdir.optional(workdir.is_number),
                  'cpu_s': workdir.optional(workdir.is_number),
                  'stages': workdir.list_of(workdir.is_line), 'rc': workdir.is_int}


@dataclass
class EvalStage:
    """One evaluation stage of a suite."""
    name: str
    kind: str
    spec: dict  # what tools/analysis/evaluate.py --spec takes
    label: str = ''
    arms: list = None  # None: every arm
    metrics: list = field(default_factory=list)  # of Metric


def parse_evaluation(entries, where, arm_names, metric_cls):
    """The suite's ``evaluation`` list as :class:`EvalStage` objects (checked now, so a typo
    fails before any training)."""
    from ..evaluation.stages import build_stage
    stages = []
    for i, entry in enumerate(entries or []):
        entry = dict(kind=entry) if isinstance(entry, str) else dict(entry)
        arms = entry.pop('arms', None)
        label = entry.pop('label', None)
        stage = build_stage(entry, f'{where}: evaluation[{i}]')
        if arms is not None and not set(arms) <= set(arm_names):
            raise UserInputError(f'{where}: evaluation[{i}] ({stage.name}) names arms '
                                 f'{sorted(set(arms) - set(arm_names))}, which are not arms '
                                 f'({", ".join(arm_names)}).')
        metrics = [metric_cls(name=n, key=n, stage=stage.name) for n in stage.metric_names()]
        stages.append(EvalStage(name=stage.name, kind=stage.KIND, spec=stage.spec(),
                                label=label or stage.name, arms=arms, metrics=metrics))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UserInputError(f'{where}: evaluation stage names must be unique, got {names}; '
                             "give repeated kinds a name=... each.")
    return stages


def _stage_obj(stage):
    from ..evaluation.stages import build_stage
    return build_stage(stage.spec)


def check_data(suite, echo=print):
    """Stages whose data is missing: reported once each, then dropped from the suite (and its
    metrics) so that nothing is scored for them. Returns ``{stage: reason}``."""
    from ..datasets.imagenet_robustness import RobustnessSetMissing
    skipped = {}
    for stage in list(getattr(suite, 'evaluation', [])):
        try:
            _stage_obj(stage).check()
        except RobustnessSetMissing as e:
            skipped[stage.name] = str(e)
            echo(f'evaluation {stage.name}: skipped for every cell, not scored -- {e}')
    if skipped:
        suite.evaluation = [s for s in suite.evaluation if s.name not in skipped]
        suite.metrics = [m for m in suite.metrics if m.stage not in skipped]
    return skipped


def eval_dir(train_cell):
    return osp.join(train_cell.work_dir, EVAL_DIR)


def _settings(stage, train_cell, checkpoint):
    from ..evaluation.cli import stage_settings
    return stage_settings(_stage_obj(stage), train_cell.config, checkpoint,
                          _options(train_cell))


def _options(train_cell):
    """The training cell's cfg-options, as the evaluation process gets them."""
    return json.loads(json.dumps(train_cell.options, default=str))


def plan_evaluations(suite, train_cells):
    """One evaluation cell per finished training cell and stage, with its state: ``done``
    (its result file matches), ``new`` otherwise."""
    from ..evaluation.cli import read_result
    from .cells import Cell
    out = []
    for train in train_cells:
        if train.stage != 'train' or train.state != 'done':
            continue
        ckpt = train.result.get('checkpoint')  # checked against its marker's SHA-256
        for stage in getattr(suite, 'evaluation', []):
            if stage.arms is not None and train.arm not in stage.arms:
                continue
            cell = Cell(arm=train.arm, seed=train.seed, stage=stage.name, config=train.config,
                        work_dir=eval_dir(train), options=train.options,
                        metrics=stage.metrics, parent=train)
            old = read_result(cell.work_dir, stage.name)
            if (ckpt and old and old.get('status') == 'done' and
                    old.get('settings') == _settings(stage, train, ckpt)):
                cell.state = 'done'
                cell.result = _cell_result(old)
            out.append(cell)
    return out


def _cell_result(data):
    return dict(metrics={k: v for k, v in data.get('metrics', {}).items() if v is not None},
                curves=data.get('curves', {}), num_images=data.get('num_images'),
                wall_s=data.get('wall_s'), missing=[])


def cache_dir(train_cell):
    """``WORK/evaluation_cache``: corrupted images shared by every cell of the suite."""
    return osp.join(osp.dirname(osp.dirname(train_cell.work_dir)), 'evaluation_cache')


def command(train_cell, stages, python, spec):
    """argv of the evaluation process of one training cell (``spec``: the stages as JSON)."""
    from .launch import option_args
    from .runner import expected_checkpoint
    argv = [python, tool_path('analysis', 'evaluate.py'), train_cell.config,
            expected_checkpoint(train_cell), '--spec', spec, '--work-dir',
            eval_dir(train_cell), '--cache-dir', cache_dir(train_cell)]
    if train_cell.options:
        argv += ['--cfg-options', *option_args(train_cell.options)]
    return argv


def _prefix(launcher):
    """One task on one GPU of the cluster for ``--launcher slurm``; nothing otherwise."""
    if getattr(launcher, 'kind', 'local') == 'slurm':
        return ['srun', '-p', launcher.partition, '--ntasks=1', '--gres=gpu:1',
                '--kill-on-bad-exit=1']
    return []


def run_evaluations(suite, cells, launcher, echo=print, jobs=1, env=None, dry_run=False):
    """Evaluate every finished training cell; returns ``(evaluation cells, failed cells)``.

    One process per training cell runs its unfinished stages (``jobs`` side by side); its output
    goes to ``<cell>/evaluation/evaluate_output.log``.
    """
    if not getattr(suite, 'evaluation', None):
        return [], []
    train = [c for c in cells if c.stage == 'train']
    if dry_run:
        from .launch import shell_line
        spec = json.dumps([s.spec for s in suite.evaluation], separators=(',', ':'))
        for c in train:
            echo(shell_line(_prefix(launcher) + command(c, suite.evaluation, 'python', spec),
                            {}))
        return [], []
    evals = plan_evaluations(suite, train)
    todo = {}
    for cell in evals:
        if cell.state != 'done':
            todo.setdefault(id(cell.parent), (cell.parent, []))[1].append(cell)
    n_done = sum(c.state == 'done' for c in evals)
    echo(f'evaluation: {len(suite.evaluation)} stage(s) x {len(train)} cell(s): '
         f'{n_done} finished, {len(evals) - n_done} to run' +
         (f' in {len(todo)} process(es)' if todo else ''))
    failed = []

    def one(parent, pending):
        stages = [s for s in suite.evaluation if s.name in {c.stage for c in pending}]
        folder = eval_dir(parent)
        workdir.makedirs(folder, parent.root)
        workdir.makedirs(cache_dir(parent), parent.root)
        # the stages go on the command line: no file in the work dir to swap before it is read
        spec = json.dumps([s.spec for s in stages], separators=(',', ':'))
        argv = _prefix(launcher) + command(parent, stages, launcher.python, spec)
        rc, wall, cpu = _run(argv, osp.join(folder, EVAL_LOG), env, parent.root)
        name = f'{parent.arm} seed {parent.seed}'
        from ..evaluation.cli import read_result
        shown = []
        for cell in pending:
            data = read_result(folder, cell.stage)
            if rc == 0 and data and data.get('status') == 'done':
                cell.state, cell.result = 'done', _cell_result(data)
                shown += [f'{k} {v:.2f}' for k, v in cell.result['metrics'].items()]
            else:
                cell.state = 'failed'
                failed.append(cell)
        workdir.write_json(osp.join(folder, PROCESS), dict(
            wall_s=wall, cpu_s=cpu, stages=[s.name for s in stages], rc=rc), parent.root)
        if rc:
            echo(f'[eval] {name}: FAILED (exit code {rc}); last lines of its log:\n' +
                 _tail(osp.join(folder, EVAL_LOG)))
        else:
            cpu_text = f', {cpu:.0f} s CPU' if cpu is not None else ''
            echo(f'[eval] {name}: {", ".join(shown)} ({wall:.0f} s{cpu_text})')

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for f in [pool.submit(one, parent, pending) for parent, pending in todo.values()]:
            f.result()
    return evals, failed


def _run(argv, log_path, env=None, root=None):
    """Run one evaluation process, its output to ``log_path``; ``(returncode, wall seconds,
    CPU seconds of the process or None)``."""
    import subprocess

    from . import launch as launching
    from .suite import ROOT
    full_env = dict(os.environ, **(env or {}))
    full_env['PYTHONPATH'] = ROOT + (os.pathsep + full_env['PYTHONPATH']
                                     if full_env.get('PYTHONPATH') else '')
    full_env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    start = time.time()
    with workdir.open_append(log_path, root) as log:
        log.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")} '
                  f'{launching.shell_line(argv, {})}\n')
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        launching.RUNNING.add(proc)
        cpu = None
        try:
            if hasattr(os, 'wait4'):  # the child's own CPU time (the machine may be shared)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
            else:
                proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            launching.RUNNING.discard(proc)
    return proc.returncode, time.time() - start, cpu


def _tail(path, n=15):
    return workdir.tail(path, n)


# ------------------------------------------------------------------------------------------
# results: curves per arm, compact lines, plots
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
                proc = workdir.read_json(osp.join(eval_dir(c), PROCESS), PROCESS_SCHEMA,
                                         what='evaluation process record')
                if proc is not None:
                    walls.append(proc.get('wall_s'))
                    cpus.append(proc.get('cpu_s'))
        out['wall_s'][arm.name] = [w for w in walls if w is not None]
        out.setdefault('cpu_s', {})[arm.name] = [w for w in cpus if w is not None]
    return out


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
        better = 'lower is better' if metric['name'] in LOWER_IS_BETTER else 'higher is better'
        lines.append((f'{metric["name"]} ({better})', ' | '.join(parts)))
    width = max((len(a) for a, _ in lines), default=0)
    out = [f'{a.ljust(width)}  {b}' for a, b in lines]
    for name, reason in ev.get('skipped', {}).items():
        out.append(f'{name}: skipped, not scored ({reason})')
    return out


def families(results):
    """The results.png panels of the evaluation: a list of ``draw(ax)`` functions."""
    ev = results.get('evaluation') or {}
    if not ev.get('stages'):
        return []
    by_kind = {}
    for name, s in ev['stages'].items():
        by_kind.setdefault(s['kind'], []).append(name)
    labels = {n: a['label'] for n, a in results['arms'].items()}
    import matplotlib.pyplot as plt
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


def evaluate_cells(suite, cells, launcher, echo=print, jobs=1, env=None, failed=None,
                   dry_run=False):
    """The runner's hook after training: report missing sets once, evaluate every finished
    cell. Returns ``(cells + evaluation cells, {skipped stage: reason})``; failed evaluation
    cells are appended to ``failed``."""
    if not getattr(suite, 'evaluation', None):
        return cells, {}
    skipped = check_data(suite, echo)
    evals, bad = run_evaluations(suite, cells, launcher, echo, jobs, env, dry_run)
    if failed is not None:
        failed += bad
    return cells + evals, skipped


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
    walls = [w for ws in (results['evaluation'].get('wall_s') or {}).values() for w in ws]
    cpus = [w for ws in (results['evaluation'].get('cpu_s') or {}).values() for w in ws]
    if walls:
        cpu = (f', {np.mean(cpus):.0f} s of CPU ({min(cpus):.0f}-{max(cpus):.0f} s: the '
               'first cells compute the corrupted images, the others reuse them)'
               if cpus else '')
        out.append(f'  evaluation time per cell: {np.mean(walls):.0f} s wall on average{cpu}; '
                   'one process per cell, after the training cells.')
    return out
