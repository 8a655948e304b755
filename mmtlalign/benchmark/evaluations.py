"""Evaluation stages of a suite, planned and run after a cell's training, on its final
checkpoint.

The suite lists them (:class:`~.suite.EvalStage`, parsed by :func:`~.suite.load_suite`); for
every finished training cell the runner starts one ``tools/analysis/evaluate.py`` process with
the stages it still lacks; each stage writes ``WORK/<arm>/seed<seed>/evaluation/<stage>.json``
(:mod:`mmtlalign.evaluation.results`), and a rerun skips the stages whose file holds the same
settings (stage, config, options, checkpoint). A stage whose dataset is missing is reported once
and skipped for every cell (its metrics leave the results: never scored).

The stage metrics join the suite's metrics (``Metric.stage`` = the stage name), so per seed,
mean ± std, paired differences with 95% CIs and verdicts come out of
:func:`~.report.aggregate` like top-1; :func:`~.report.summarise` adds their curves.

Written and read back through :mod:`mmtlalign.workdir` (``process.json``, the log, the shared
``WORK/evaluation_cache`` folder made without following a link); the stages' result files are
schema-checked (:func:`mmtlalign.evaluation.results.read_result`).
"""
import json
import os
import os.path as osp
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from mmengine.config import Config

from .. import workdir
from ..cli.cfg_options import option_args
from ..datasets.imagenet_robustness import RobustnessSetMissing
from ..evaluation.results import read_result, stage_settings
from ..evaluation.stages import build_stage
from ..paths import project_root, tool_path
from . import launch as launching
from .cells import Cell, expected_checkpoint

EVAL_DIR = 'evaluation'
EVAL_LOG = 'evaluate_output.log'
PROCESS = 'process.json'
PROCESS_SCHEMA = {'wall_s': workdir.optional(workdir.is_number),
                  'cpu_s': workdir.optional(workdir.is_number),
                  'stages': workdir.list_of(workdir.is_line), 'rc': workdir.is_int}


def arm_configs(suite, stage):
    """The loaded configs of the arms ``stage`` applies to (with the suite's and the arm's
    cfg-options), for stages whose data comes from the test pipeline (``NEEDS_CONFIG``)."""
    for arm in suite.arms:
        if stage.arms is None or arm.name in stage.arms:
            cfg = Config.fromfile(arm.config)
            cfg.merge_from_dict({**suite.cfg_options, **arm.cfg_options})
            yield cfg


def check_data(suite, echo=print):
    """Stages whose data is missing: reported once each, then dropped from the suite (and its
    metrics) so that nothing is scored for them. Returns ``{stage: reason}``."""
    skipped = {}
    for stage in list(getattr(suite, 'evaluation', [])):
        obj = build_stage(stage.spec)
        try:
            obj.check()
            for cfg in arm_configs(suite, stage) if obj.NEEDS_CONFIG else ():
                obj.check(cfg)  # e.g. label_fidelity: the test images carry fg_mask
        except RobustnessSetMissing as e:
            skipped[stage.name] = str(e)
            echo(f'evaluation {stage.name}: skipped for every cell, not scored -- {e}')
    if skipped:
        suite.evaluation = [s for s in suite.evaluation if s.name not in skipped]
        suite.metrics = [m for m in suite.metrics if m.stage not in skipped]
    return skipped


def eval_dir(train_cell):
    return osp.join(train_cell.work_dir, EVAL_DIR)


def read_process(train_cell):
    """The checked ``process.json`` of a training cell's evaluation process, or None."""
    return workdir.read_json(osp.join(eval_dir(train_cell), PROCESS), PROCESS_SCHEMA,
                             what='evaluation process record')


def cache_dir(train_cell):
    """``WORK/evaluation_cache``: corrupted images shared by every cell of the suite."""
    return osp.join(osp.dirname(osp.dirname(train_cell.work_dir)), 'evaluation_cache')


def _settings(stage, train_cell, checkpoint):
    return stage_settings(build_stage(stage.spec), train_cell.config, checkpoint,
                          _options(train_cell))


def _options(train_cell):
    """The training cell's cfg-options, as the evaluation process gets them."""
    return json.loads(json.dumps(train_cell.options, default=str))


def _stage_result(data):
    """A stage's result file as an evaluation cell's ``result``."""
    return dict(metrics={k: v for k, v in data.get('metrics', {}).items() if v is not None},
                curves=data.get('curves', {}), num_images=data.get('num_images'),
                wall_s=data.get('wall_s'), missing=[])


def plan_evaluations(suite, train_cells):
    """One evaluation cell per finished training cell and stage, with its state: ``done``
    (its result file matches), ``new`` otherwise."""
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
                cell.result = _stage_result(old)
            out.append(cell)
    return out


def command(train_cell, stages, python, spec):
    """argv of the evaluation process of one training cell (``spec``: the stages as JSON)."""
    argv = [python, tool_path('analysis', 'evaluate.py'), train_cell.config,
            expected_checkpoint(train_cell), '--spec', spec, '--work-dir',
            eval_dir(train_cell), '--cache-dir', cache_dir(train_cell)]
    if train_cell.options:
        argv += ['--cfg-options', *option_args(train_cell.options)]
    return argv


def _collect(suite, train):
    """``--launcher slurm``: each training cell's evaluation job ran its stages
    (:mod:`.slurm`); the stages without a result file failed."""
    evals = plan_evaluations(suite, train)
    failed = [c for c in evals if c.state != 'done']
    for cell in failed:
        cell.state = 'failed'
    return evals, failed


def _spec(stages):
    """The stages as one JSON argument: on the command line, no file in the work dir to swap
    before it is read."""
    return json.dumps([s.spec for s in stages], separators=(',', ':'))


def run_evaluations(suite, cells, launcher, echo=print, jobs=1, env=None, dry_run=False):
    """Evaluate every finished training cell; returns ``(evaluation cells, failed cells)``.

    One process per training cell runs its unfinished stages (``jobs`` side by side); its output
    goes to ``<cell>/evaluation/evaluate_output.log``.
    """
    if not getattr(suite, 'evaluation', None):
        return [], []
    train = [c for c in cells if c.stage == 'train']
    if getattr(launcher, 'kind', 'local') == 'slurm':  # (a dry run printed the jobs' scripts)
        return ([], []) if dry_run else _collect(suite, train)
    if dry_run:
        spec = _spec(suite.evaluation)
        for c in train:
            echo(launching.shell_line(command(c, suite.evaluation, 'python', spec), {}))
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
        argv = command(parent, stages, launcher.python, _spec(stages))
        rc, wall, cpu = _run(argv, osp.join(folder, EVAL_LOG), env, parent.root)
        name = f'{parent.arm} seed {parent.seed}'
        shown = []
        for cell in pending:
            data = read_result(folder, cell.stage)
            if rc == 0 and data and data.get('status') == 'done':
                cell.state, cell.result = 'done', _stage_result(data)
                shown += [f'{k} {v:.2f}' for k, v in cell.result['metrics'].items()]
            else:
                cell.state = 'failed'
                failed.append(cell)
        workdir.write_json(osp.join(folder, PROCESS), dict(
            wall_s=wall, cpu_s=cpu, stages=[s.name for s in stages], rc=rc), parent.root)
        if rc:
            echo(f'[eval] {name}: FAILED (exit code {rc}); last lines of its log:\n' +
                 workdir.tail(osp.join(folder, EVAL_LOG), 15))
        else:
            cpu_text = f', {cpu:.0f} s CPU' if cpu is not None else ''
            echo(f'[eval] {name}: {", ".join(shown)} ({wall:.0f} s{cpu_text})')

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for f in [pool.submit(one, parent, pending) for parent, pending in todo.values()]:
            f.result()
    return evals, failed


def _run(argv, log_path, env=None, root=None):
    """Run one evaluation process, its output to ``log_path``; ``(returncode, wall seconds,
    CPU seconds of the process or None)``."""
    full_env = dict(os.environ, **(env or {}))
    full_env['PYTHONPATH'] = project_root() + (
        os.pathsep + full_env['PYTHONPATH'] if full_env.get('PYTHONPATH') else '')
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


def evaluate_cells(suite, cells, launcher, echo=print, jobs=1, env=None, failed=None,
                   dry_run=False):
    """The runner's step after training: report missing sets once, evaluate every finished
    cell. Returns ``(cells + evaluation cells, {skipped stage: reason})``; failed evaluation
    cells are appended to ``failed``."""
    if not getattr(suite, 'evaluation', None):
        return cells, {}
    skipped = check_data(suite, echo)
    evals, bad = run_evaluations(suite, cells, launcher, echo, jobs, env, dry_run)
    if failed is not None:
        failed += bad
    return cells + evals, skipped
