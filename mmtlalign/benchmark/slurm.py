"""A whole suite as Slurm batch jobs, submitted at once (``tools/benchmark.py --launcher slurm``).

Plain ``sbatch`` scripts, not submitit: the job must run ``tools/slurm_train.sh`` (``srun`` +
mmengine's ``--launcher slurm``), exactly what a user runs by hand, and submitit submits a
pickled Python function run by its own ``srun python -m submitit...`` wrapper, with its own
requeue protocol around that function; using it would mean a second way of launching training
(in-process, outside ``tools/train.py``) and still our own code for the part that matters, saving
at the signal (``mmtlalign.engine.preemption``). With ``sbatch`` the requeue is three lines of
the script: training exits 75 after saving, the script runs ``scontrol requeue``.

The jobs of a suite (one submission queues them all; nobody has to keep a shell alive):

- one per **training cell** (``tools/slurm_train.sh``), a **downstream cell** with
  ``--dependency=afterok:<its training cell's job>`` (it reads that cell's ``last_checkpoint``
  when it starts);
- one **evaluation job** per training cell whose arm has evaluation stages, with
  ``--dependency=afterok:<its training job>``: ``tools/analysis/evaluate.py`` on the cell's last
  checkpoint with every stage; finished stage files are skipped, so a requeued (pre-empted)
  evaluation job resumes stage by stage. One task, the suite's ``--cpus-per-task``, one GPU
  only where the partition has GPU GRES and ``--gpus-per-node`` > 0;
- one **report job** with ``--dependency=afterany:<every other queued job>``: ``tools/
  benchmark.py ... --report`` writes ``results.{json,md,png}`` and the evaluation summary from
  what the others left, naming what failed.

Jobs that depend on another get ``--kill-on-invalid-dep=yes``: when their training job fails,
Slurm cancels them instead of holding them forever (``DependencyNeverSatisfied``), so the report
job still runs.

Before anything is queued the request is checked against the partition (``sinfo``: CPUs, GPU
GRES and memory per node, node count): a job that could never start is refused in one line
naming the option to change. Pending reasons that can never clear (``PartitionConfig``...) are
shown as ``stuck`` with what they mean and are not waited on.

A submission run:

- reads each job's record (a cell's ``benchmark_cell.json``; ``benchmark_slurm.json`` of an
  evaluation job; ``report_slurm.json`` of the report job: its last job id and submission
  command) and asks the scheduler (``squeue``; ``scontrol show job`` / ``sacct`` for jobs that
  have left the queue) and the job's own end record (written by the job script) what became of
  it: pending (with the reason) / stuck (pending for a reason that never clears) / running /
  done / failed (with the reason, the log that holds the error and its tail) / vanished (left
  the queue without a record) / stopped (saved at a signal, but Slurm did not run the job
  again: resubmitted, by ``wait`` as well);
- says when queued jobs were submitted with other options than this run's, and how to
  replace them (a queued job keeps its options);
- collects finished cells (metrics from their logs, as the local runner does);
- submits every job that is not done or queued (new, failed or vanished; training resumes with
  ``--resume`` when the work dir has a checkpoint), at most ``max_jobs`` queued at once (the
  report job aside), then the report job after all of them;
- with ``wait``: polls until every job has ended, submitting more as the cap allows.

Each training job: ``--requeue --signal=USR1@180`` (a warning before the time limit), output
appended to the cell's ``benchmark_output.log``, which this tool creates itself (``O_NOFOLLOW``)
before ``sbatch`` so that Slurm's ``--output ... --open-mode=append`` never follows a planted
link (an evaluation job's log: ``evaluation/evaluate_output.log``; the report's:
``report_output.log``).

Records are input, not trusted state: every record is schema-checked (:mod:`.cells`,
:data:`JOB_RECORD_SCHEMA`, :data:`UNIT_SCHEMA`; job ids ``^\\d+(_\\d+)?$``) before an id
reaches a Slurm command, and the commands get ids where no option can be (``--jobs=ID``,
``scancel -- ID``). The job scripts write their end record and read the training cell's
``last_checkpoint`` through :mod:`mmtlalign.workdir` too (loaded without torch).
"""
import copy
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import time

from .. import workdir
from ..cli.cfg_options import option_args
from ..errors import UserInputError
from ..paths import project_root, tool_path
from . import launch as launching
from .cells import Cell, cell_result, make_work_dir, read_marker, write_marker
from .evaluations import EVAL_LOG, cache_dir, check_data, eval_dir, plan_evaluations

JOB_RECORD = 'benchmark_job.json'
JOB_RECORD_SCHEMA = {'job_id': workdir.is_job_id, 'rc': workdir.is_int,
                     'ended?': workdir.is_line}
#: the submission record of an evaluation or report job
UNIT_SCHEMA = {'job_id': workdir.is_job_id, 'command?': workdir.is_str,
               'submitted?': workdir.is_line, 'dependency?': workdir.optional(workdir.is_job_id),
               'after?': workdir.list_of(workdir.is_job_id),
               'history?': workdir.list_of(workdir.is_job_id)}
REQUEUE_EXIT = 75  # mmtlalign.engine.preemption.REQUEUE_EXIT (not imported: no torch here)
ACTIVE = {'PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED', 'REQUEUE_HOLD',
          'REQUEUE_FED', 'RESIZING', 'SUSPENDED', 'STAGE_OUT', 'SIGNALING'}
NEVER = ('DependencyNeverSatisfied',)
#: pending reasons that never clear by waiting: what each means
STUCK = {
    'PartitionConfig': 'it asks for more than a node of the partition has (CPUs, memory or '
                       'GPUs per node)',
    'PartitionNodeLimit': 'it asks for more nodes than the partition allows',
    'PartitionTimeLimit': "its --time is above the partition's MaxTime",
    'BadConstraints': 'no node satisfies its constraints',
    'InvalidAccount': 'its account is not valid here',
    'InvalidQOS': 'its QOS is not valid here',
    'AssocMaxWallDurationPerJobLimit': 'its --time is above what the association allows',
    'QOSMaxWallDurationPerJobLimit': "its --time is above the QOS's limit",
}
MAX_RESTARTS = 20  # resubmissions of a cell stopped at a signal, per run of the command
#: sbatch options that do not describe what a job asks for (not compared between runs)
_VOLATILE = ('--dependency=', '--kill-on-invalid-dep=', '--parsable')


def _run(argv, timeout=60):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UserInputError(f'{argv[0]} not found: --launcher slurm needs the Slurm client '
                             'commands (sbatch, squeue, scontrol) on PATH.') from None
    except subprocess.TimeoutExpired:
        raise UserInputError(f'{argv[0]} did not answer in {timeout} s: is the Slurm '
                             'controller up (SLURM_CONF, `scontrol ping`)?') from None


def check_client():
    missing = [c for c in ('sbatch', 'squeue', 'scontrol', 'sinfo') if shutil.which(c) is None]
    if missing:
        raise UserInputError(f'--launcher slurm needs the Slurm commands {", ".join(missing)} on '
                             'PATH (run on a login node of the cluster, or install '
                             'slurm-client).')


# --------------------------------------------------------------------------------------------
# the partition, and whether a job fits it
# --------------------------------------------------------------------------------------------
def _gpus(gres):
    """GPUs in a node's ``sinfo %G`` (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``)."""
    return sum(int(m.group(1)) for m in re.finditer(r'(?:^|,)gpu(?::[^:,()]+)?:(\d+)', gres))


def partition_info(partition):
    """What the nodes of ``partition`` have (``sinfo -N``): ``dict(nodes, cpus, mem, gpus)``,
    each the largest of one node (``mem`` in MB), and ``total_cpus``."""
    r = _run(['sinfo', '-h', '-N', '-p', partition, '-o', '%N|%c|%m|%G'])
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ['no output'])[-1]
        raise UserInputError(f'cannot reach the Slurm controller (sinfo: {last}); run this on a '
                             'login node of the cluster, or set SLURM_CONF to its slurm.conf.')
    nodes = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split('|')
        if len(parts) == 4 and parts[1].isdigit():
            mem = re.match(r'\d+', parts[2])
            nodes[parts[0]] = (int(parts[1]), int(mem.group()) if mem else 0, _gpus(parts[3]))
    if not nodes:
        raise UserInputError(f'slurm partition {partition!r} does not exist (sinfo lists none); '
                             'see `sinfo -s` for the partitions.')
    values = list(nodes.values())
    return dict(nodes=len(values), cpus=max(v[0] for v in values),
                mem=max(v[1] for v in values), gpus=max(v[2] for v in values),
                total_cpus=sum(v[0] for v in values))


def partition_has_gpus(partition):
    """Whether a node of ``partition`` has GPU GRES (what ``tools/slurm_train.sh`` decides)."""
    return partition_info(partition)['gpus'] > 0


def _mem_mb(text):
    m = re.fullmatch(r'(\d+)([KMGT]?)B?', text.strip().upper())
    if not m:
        return None
    return int(m.group(1)) * {'K': 1 / 1024, '': 1, 'M': 1, 'G': 1024, 'T': 1024 ** 2}[m.group(2)]


#: short forms of the sbatch options the check reads
_SHORT = {'-c': '--cpus-per-task', '-N': '--nodes', '-n': '--ntasks'}


def _effective(opts):
    """``{option: value}`` of an sbatch option list, the last occurrence winning (as sbatch
    reads ``--slurm-args`` after ours)."""
    out, i = {}, 0
    while i < len(opts):
        key, _, value = opts[i].partition('=')
        key = _SHORT.get(key, key)
        if not _ and i + 1 < len(opts) and not opts[i + 1].startswith('-'):
            value, i = opts[i + 1], i + 1
        out[key] = value
        i += 1
    return out


def check_fit(launcher, info, opts):
    """Refuse (one line, with the fix) a job that no node of the partition can ever run
    (``opts``: a training job's sbatch options): it would pend (``PartitionConfig``) forever."""
    part = f'slurm partition {launcher.partition!r}'
    eff = _effective(opts)
    ours = _effective(shlex.split(launcher.slurm_args or ''))

    def number(key, default):
        value = re.match(r'\d+', eff.get(key, ''))
        return int(value.group()) if value else default

    def fix(key, value):
        if key in ours:
            return f'set {key}={value} in --slurm-args (it has {key}={ours[key]})'
        return f'pass {key} {value}'
    cpt, nodes = number('--cpus-per-task', 1), number('--nodes', 1)
    tasks = number('--ntasks-per-node', 1)  # (without it, Slurm places the tasks)
    cpus = tasks * cpt
    if cpus > info['cpus']:
        raise UserInputError(
            f'{part} has at most {info["cpus"]} CPUs per node, but each job asks for {tasks} '
            f'task(s) x {cpt} CPUs (--cpus-per-task) = {cpus} on one node: it would pend '
            f'(PartitionConfig) forever; ' + (fix('--cpus-per-task', info['cpus'] // tasks)
                                              if info['cpus'] >= tasks else
                                              fix('--gpus-per-node', info['cpus'])) + '.')
    if nodes > info['nodes']:
        raise UserInputError(
            f'{part} has {info["nodes"]} node(s), but each job asks for {nodes} (--gpus '
            f'{launcher.gpus} at --gpus-per-node {launcher.gpus_per_node}); pass fewer --gpus '
            'or a larger --gpus-per-node.')
    if '--gres' not in eff and '--ntasks-per-node' not in eff and \
            number('--ntasks', 1) * cpt > info['total_cpus']:
        raise UserInputError(
            f'{part} has {info["total_cpus"]} CPUs in all, but each job asks for '
            f'{number("--ntasks", 1)} task(s) x {cpt} CPUs; pass fewer --gpus or a smaller '
            '--cpus-per-task.')
    gpus = _gpus(eff.get('--gres', ''))
    if gpus > info['gpus']:
        have = f'at most {info["gpus"]} GPUs' if info['gpus'] else 'no GPU GRES'
        raise UserInputError(
            f'{part} has {have} per node, but each job asks for --gres={eff["--gres"]}; ' +
            (fix('--gpus-per-node', info['gpus']) if '--gres' not in ours else
             f'change --gres in --slurm-args (it has --gres={ours["--gres"]})') + '.')
    for key, per_cpu in (('--mem', False), ('--mem-per-cpu', True)):
        mb = _mem_mb(eff[key]) if key in eff else None
        if mb and info['mem'] and (mb * cpus if per_cpu else mb) > info['mem']:
            asked = f'{key}={eff[key]}' + (f' x {cpus} CPUs' if per_cpu else '')
            raise UserInputError(
                f'{part} has at most {info["mem"]} MB of memory per node, but each job asks '
                f'for {asked} (--slurm-args): it would never start; ask for '
                f'{info["mem"] // (cpus if per_cpu else 1)}M or less.')


# --------------------------------------------------------------------------------------------
# the jobs of a suite
# --------------------------------------------------------------------------------------------
class EvalJob:
    """The evaluation job of one training cell: every evaluation stage of its arm on its last
    checkpoint (``tools/analysis/evaluate.py``), after its training job."""
    kind = 'eval'

    def __init__(self, train, stages):
        self.train = self.parent = train
        self.stages = stages  # of EvalStage
        self.work_dir = eval_dir(train)  # its records, script and log
        self.root, self.arm, self.seed = train.root, train.arm, train.seed
        self.stage = 'evaluation'
        self.state = 'new'

    name = property(lambda self: f'{self.train.name} -> evaluation')
    job_name = property(lambda self: f'{self.arm}-s{self.seed}-eval')
    log = property(lambda self: osp.join(self.work_dir, EVAL_LOG))
    script = property(lambda self: osp.join(self.work_dir, 'benchmark_job.sh'))
    record = property(lambda self: osp.join(self.work_dir, 'benchmark_slurm.json'))
    end_record = property(lambda self: osp.join(self.work_dir, JOB_RECORD))

    def missing(self, suite):
        """The stages without a finished result for the training cell's checkpoint."""
        if self.train.state != 'done':
            return [s.name for s in self.stages]
        done = {c.stage for c in plan_evaluations(suite, [self.train]) if c.state == 'done'}
        return [s.name for s in self.stages if s.name not in done]


class ReportJob:
    """The job that writes ``results.{json,md,png}`` after every other job has ended."""
    kind = 'report'
    parent = None
    stage = 'report'
    arm = seed = None

    def __init__(self, suite, work_root):
        self.work_dir = self.root = work_root
        self.job_name = f'{suite.name}-report'
        self.state = 'new'

    name = 'report'
    log = property(lambda self: osp.join(self.work_dir, 'report_output.log'))
    script = property(lambda self: osp.join(self.work_dir, 'report_job.sh'))
    record = property(lambda self: osp.join(self.work_dir, 'report_slurm.json'))
    end_record = property(lambda self: osp.join(self.work_dir, 'report_job.json'))


def job_name(cell):
    if not isinstance(cell, Cell):
        return cell.job_name
    return f'{cell.arm}-s{cell.seed}' + ('' if cell.stage == 'train' else f'-{cell.stage}')


def log_path(unit):
    """The log that holds a job's (or a cell's, or an evaluation stage's) output and error."""
    if not isinstance(unit, Cell):
        return unit.log
    if unit.parent is not None and unit.work_dir == eval_dir(unit.parent):
        return osp.join(unit.work_dir, EVAL_LOG)  # an evaluation stage of a training cell
    return osp.join(unit.work_dir, launching.LOG)


def _script_path(unit):
    return unit.script if not isinstance(unit, Cell) else \
        osp.join(unit.work_dir, 'benchmark_job.sh')


def _end_record_path(unit):
    return unit.end_record if not isinstance(unit, Cell) else \
        osp.join(unit.work_dir, JOB_RECORD)


def slurm_record(unit):
    """The checked submission record of a job (``{}`` when it was never submitted)."""
    if isinstance(unit, Cell):
        return (read_marker(unit.work_dir) or {}).get('slurm') or {}
    return workdir.read_json(unit.record, UNIT_SCHEMA, what='Slurm submission record',
                             fix='delete it (the job is then submitted again)') or {}


def _save_record(unit, record):
    if isinstance(unit, Cell):
        write_marker(unit, 'submitted', slurm=record)
    else:
        workdir.write_json(unit.record, record, unit.root)


# --------------------------------------------------------------------------------------------
# the job scripts
# --------------------------------------------------------------------------------------------
def _common_options(unit, launcher, dependency, kind='afterok'):
    opts = [f'--output={log_path(unit)}', '--open-mode=append']
    if launcher.time:
        opts.append(f'--time={launcher.time}')
    if dependency:
        opts += [f'--dependency={kind}:{dependency}', '--kill-on-invalid-dep=yes']
    return opts + shlex.split(launcher.slurm_args or '')  # (last: they win)


def sbatch_options(cell, launcher, gres, dependency=None):
    """``#SBATCH`` options of a job (``launcher.slurm_args`` last: they win)."""
    base = [f'--job-name={job_name(cell)}', f'--partition={launcher.partition}']
    if isinstance(cell, ReportJob):  # aggregation only: one CPU, no GPU
        return base + ['--ntasks=1', '--cpus-per-task=1'] + _common_options(
            cell, launcher, dependency, 'afterany')
    if isinstance(cell, EvalJob):  # one process, on one GPU where there are GPUs
        opts = base + ['--nodes=1', '--ntasks=1', f'--cpus-per-task={launcher.cpus_per_task}']
        if gres and launcher.gpus_per_node > 0:
            opts.append('--gres=gpu:1')
        return opts + ['--requeue'] + _common_options(cell, launcher, dependency)
    gpus, per_node = launcher.gpus, min(launcher.gpus, launcher.gpus_per_node)
    opts = base + [f'--ntasks={gpus}']
    if per_node > 0:
        opts += [f'--nodes={-(-gpus // per_node)}', f'--ntasks-per-node={per_node}']
        if gres:
            opts.append(f'--gres=gpu:{per_node}')
    opts += [f'--cpus-per-task={launcher.cpus_per_task}', '--requeue',
             f'--signal=USR1@{launcher.signal_seconds}']
    return opts + _common_options(cell, launcher, dependency)


def workdir_call(*args):
    """A shell command running :func:`mmtlalign.workdir.main` with ``args`` (quoted) in a
    fresh Python, the module loaded from its folder without the package's ``__init__`` (which
    imports torch: seconds per job for a few lines of work)."""
    q = shlex.quote
    code = ('import sys, types; m = types.ModuleType("mmtlalign"); m.__path__ = [sys.argv[1]]; '
            'sys.modules["mmtlalign"] = m; from mmtlalign.workdir import main; '
            'main(sys.argv[2:])')
    return (f'{q(sys.executable)} -c {q(code)} {q(osp.dirname(workdir.__file__))} ' +
            ' '.join(a if a.startswith('"') else q(a) for a in args))


def _head(unit):
    return ['#!/usr/bin/env bash',
            f'# {unit.name}: written by tools/benchmark.py --launcher slurm',
            'set -uo pipefail',
            f'cd {shlex.quote(os.getcwd())}',
            'echo "# $(date "+%Y-%m-%d %H:%M:%S") job $SLURM_JOB_ID on $(hostname)'
            ' (restart ${SLURM_RESTART_COUNT:-0})"']


def _read_checkpoint(train, var='CKPT'):
    """Script lines setting ``$var`` to the training cell's checked last checkpoint."""
    ckpt = osp.join(train.work_dir, 'last_checkpoint')
    return [
        # checked: one line naming a file inside the training cell's work dir
        f'{var}=$({workdir_call("last-checkpoint", train.work_dir)})',
        f'if [[ ! -s "${var}" ]]; then',
        f'  echo "error: {train.name} left no checkpoint ({ckpt})" >&2',
        '  exit 1',
        'fi',
    ]


def _record_line(path):
    # (a temporary file under a fresh name, renamed: never written through a planted link)
    return workdir_call('job-record', shlex.quote(path), '"$SLURM_JOB_ID"', '"$rc"')


def job_script(cell, launcher, gres, report_argv=None):
    """The batch script of a job (a training or downstream cell: train through
    tools/slurm_train.sh, resume when there is a checkpoint, requeue itself when training
    stopped at a signal, record how it ended)."""
    if isinstance(cell, EvalJob):
        return _eval_script(cell, launcher)
    if isinstance(cell, ReportJob):
        return _report_script(cell, launcher, report_argv)
    q = shlex.quote
    work = cell.work_dir
    options = {k: v for k, v in cell.options.items() if k != cell.checkpoint_key}
    cfg_args = [q(a) for a in option_args(options)]
    lines = _head(cell) + [
        f'WORK={q(work)}',
        'RESUME=',  # (not an array: "${A[@]}" of an empty one fails under set -u in bash < 4.4)
        '[[ -s "$WORK/last_checkpoint" ]] && RESUME=--resume',
    ]
    if cell.parent is not None:
        lines += _read_checkpoint(cell.parent)
        cfg_args.append(f'{q(cell.checkpoint_key + "=")}"$CKPT"')
    env = (f'PYTHON={q(launcher.python)} GPUS={launcher.gpus} '
           f'GPUS_PER_NODE={min(launcher.gpus, launcher.gpus_per_node)} '
           f'CPUS_PER_TASK={launcher.cpus_per_task}')
    train = (f'{env} bash {q(tool_path("slurm_train.sh"))} {q(launcher.partition)} '
             f'{q(job_name(cell))} {q(cell.config)} "$WORK" $RESUME')
    if cfg_args:
        train += ' --cfg-options ' + ' '.join(cfg_args)
    record = workdir_call('job-record', f'"$WORK/{JOB_RECORD}"', '"$SLURM_JOB_ID"', '"$rc"')
    lines += [
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
        '# SIGTERM (pre-emption, scontrol requeue, scancel): training saves and exits; wait',
        'REQUEUEING=',
        "trap '[[ -z $REQUEUEING ]] && echo \"# SIGTERM: waiting for training to save and"
        " stop\"' TERM",
        'rc=0',
        train + ' || rc=$?',
        # recorded before the requeue: should Slurm not restart this job (requeue refused,
        # the restart failed), the record tells tools/benchmark.py to resubmit the cell
        record,
        f'if [[ $rc -eq {REQUEUE_EXIT} ]]; then',
        '  echo "# stopped at a signal with a checkpoint saved: requeueing job $SLURM_JOB_ID"',
        '  REQUEUEING=1',
        '  scontrol requeue "$SLURM_JOB_ID" && { sleep 300; exit 0; }',
        '  echo "# scontrol requeue did not requeue the job: tools/benchmark.py resubmits'
        ' the cell with --resume" >&2',
        'fi',
        'exit $rc',
    ]
    return '\n'.join(lines) + '\n'


def _python_env():
    q = shlex.quote
    return ['export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
            'export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"',
            f'export PYTHONPATH={q(project_root())}"${{PYTHONPATH:+:$PYTHONPATH}}"']


def _eval_script(job, launcher):
    """Every stage of the cell's arm through tools/analysis/evaluate.py, which skips the stages
    whose result file is there: a requeued job goes on from the stage it was in."""
    q = shlex.quote
    train = job.train
    spec = '[' + ','.join(_json(s.spec) for s in job.stages) + ']'
    argv = [launcher.python, tool_path('analysis', 'evaluate.py'), train.config, '"$CKPT"',
            '--spec', spec, '--work-dir', job.work_dir, '--cache-dir', cache_dir(train)]
    if train.options:
        argv += ['--cfg-options', *option_args(train.options)]
    lines = _head(job) + _read_checkpoint(train) + _python_env() + [
        'rc=0',
        ' '.join(a if a == '"$CKPT"' else q(a) for a in argv) + ' || rc=$?',
        _record_line(job.end_record),
        'exit $rc']
    return '\n'.join(lines) + '\n'


def _json(obj):
    return json.dumps(obj, separators=(',', ':'), sort_keys=True)


def _report_script(job, launcher, report_argv):
    q = shlex.quote
    lines = _head(job) + _python_env() + [
        'rc=0',
        ' '.join(q(a) for a in report_argv) + ' || rc=$?',
        _record_line(job.end_record),
        'exit $rc']
    return '\n'.join(lines) + '\n'


def report_command(suite, work_root, launcher, cfg_options=None, downstream_options=None):
    """argv of ``tools/benchmark.py ... --report``: the same suite, arms, seeds, options and
    work dir as this run, so that it plans the same cells."""
    argv = [launcher.python, tool_path('benchmark.py'), suite.path, '--work-dir', work_root,
            '--arms', *[a.name for a in suite.arms],
            '--seeds', *[str(s) for s in suite.seeds]]
    if cfg_options:
        argv += ['--cfg-options', *option_args(cfg_options)]
    if downstream_options:
        argv += ['--downstream-cfg-options', *option_args(downstream_options)]
    return argv + ['--launcher', 'slurm', '--partition', launcher.partition,
                   '--gpus', str(launcher.gpus), '--gpus-per-node', str(launcher.gpus_per_node),
                   '--cpus-per-task', str(launcher.cpus_per_task), '--report']


# --------------------------------------------------------------------------------------------
# asking the scheduler
# --------------------------------------------------------------------------------------------
def query(job_ids):
    """{job id: dict(state=..., reason=...)} for the jobs Slurm still knows."""
    out = {}
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return out
    bad = [j for j in ids if not workdir.JOB_ID.match(j)]
    if bad:  # (the records are checked on reading; this guards every other caller)
        raise UserInputError(f'not a Slurm job id: {workdir.shown(bad[0])}.')
    r = _run(['squeue', '-h', f'--jobs={",".join(ids)}', '-o', '%i|%T|%r'])
    for line in r.stdout.splitlines():
        parts = line.strip().split('|')
        if len(parts) == 3:
            out[parts[0]] = dict(state=parts[1], reason=parts[2])
    for job in ids:
        if job in out:
            continue
        r = _run(['scontrol', 'show', 'job', '-o', job])
        if r.returncode == 0 and 'JobState=' in r.stdout:
            fields = dict(re.findall(r'(\w+)=(\S*)', r.stdout))
            out[job] = dict(state=fields.get('JobState', '?'), reason=fields.get('Reason', ''),
                            exit_code=fields.get('ExitCode'))
            continue
        if shutil.which('sacct'):
            r = _run(['sacct', '-n', '-X', '-P', f'--jobs={job}', '-o',
                      'JobID,State,ExitCode,Reason'])
            for line in r.stdout.splitlines():
                parts = line.split('|')
                if parts and parts[0] == job and len(parts) >= 2:
                    out[job] = dict(state=parts[1].split()[0], exit_code=parts[2] if
                                    len(parts) > 2 else None,
                                    reason=parts[3] if len(parts) > 3 else '')
    return out


def read_job_record(cell):
    """The job's end record (checked), or None."""
    return workdir.read_json(_end_record_path(cell), JOB_RECORD_SCHEMA,
                             what='Slurm job record', fix='delete it (the job is then '
                             'looked up in the queue and resubmitted when it is gone)')


def scancel(job):
    """Cancel one job by its (checked) id; ``--`` ends the options."""
    if not workdir.JOB_ID.match(str(job)):
        raise UserInputError(f'not a Slurm job id: {workdir.shown(job)}.')
    return _run(['scancel', '--', str(job)])


def _asked(command):
    """The options of a recorded ``sbatch`` command that say what the job asks for."""
    try:
        argv = shlex.split(command or '')
    except ValueError:
        return None
    return [a for a in argv[1:-1] if not a.startswith(_VOLATILE)]


class SlurmSuite:
    """Submits and follows the jobs of one suite (see the module docstring).

    Args:
        cells: the suite's cells (training cells before their downstream ones).
        evaluation (list[EvalJob]): the evaluation jobs; ``report`` (ReportJob): the report
            job, with ``report_argv`` the command it runs.
        submit (bool): False in the report job itself: look, collect, never submit or cancel.
    """

    def __init__(self, cells, launcher, echo=print, max_jobs=None, wait=False, poll=30.0,
                 collect=None, evaluation=(), report=None, report_argv=None, suite=None,
                 submit=True):
        self.cells, self.launcher, self.echo = cells, launcher, echo
        self.evaluation, self.report, self.report_argv = list(evaluation), report, report_argv
        self.units = list(cells) + self.evaluation + ([report] if report else [])
        self.suite, self.act = suite, submit
        self.max_jobs = max_jobs
        self.wait, self.poll = wait, poll
        self.collect = collect  # cell -> result dict (cells.cell_result)
        self.status = {}  # job's work dir -> (state, detail)
        self.submitted_here = set()
        self.restarts = {}  # cell work dir -> resubmissions of a stopped cell by this run
        self.capped = False  # the last pass left jobs unsubmitted (max_jobs)
        self._gres = None

    def gres(self, dry_run=False):
        if self._gres is None:
            try:
                self._gres = partition_has_gpus(self.launcher.partition)
            except UserInputError:
                if not dry_run:
                    raise
                self._gres = True  # printing only: the partition may be another cluster's
        return self._gres

    def check(self):
        """The request against the partition (before anything is queued)."""
        info = partition_info(self.launcher.partition)
        self._gres = info['gpus'] > 0
        train = next(c for c in self.cells if c.stage == 'train')
        check_fit(self.launcher, info, sbatch_options(train, self.launcher, self._gres))

    def _job(self, cell):
        return slurm_record(cell).get('job_id')

    # -- one look at every job --
    def _done_before(self, unit):
        """Whether a job's work was done without this suite's jobs (a local run)."""
        if isinstance(unit, Cell):
            return unit.state == 'done'
        if isinstance(unit, EvalJob):
            return unit.train.state == 'done' and not unit.missing(self.suite)
        return False

    def refresh(self):
        jobs = {c.work_dir: self._job(c) for c in self.units if c.state != 'done'}
        known = query([j for j in jobs.values() if j])
        for cell in self.units:
            if cell.state == 'done':
                self.status[cell.work_dir] = ('done', '')
                continue
            job = jobs[cell.work_dir]
            if not job:
                if self._done_before(cell):
                    cell.state = 'done'
                    self.status[cell.work_dir] = ('done', '')
                    continue
                self.status[cell.work_dir] = ('new' if cell.state == 'new' else 'partial', '')
                continue
            info = known.get(job)
            if not (info and (info['state'] in ACTIVE or info.get('reason') in NEVER)) and \
                    not self._settled(cell, job):
                # no final record: the job may be between its requeue and its return to the
                # queue; look again for a few seconds
                for _ in range(4):
                    time.sleep(3)
                    info = query([job]).get(job)
                    if (info and info['state'] in ACTIVE) or self._settled(cell, job):
                        break
            if info and info['state'] in ACTIVE:
                reason = info.get('reason') or ''
                if info['state'] == 'PENDING' and reason in NEVER:
                    if self.act:
                        scancel(job)
                    self.status[cell.work_dir] = ('failed', f'job {job}: {self._after(cell)} '
                                                  'failed (dependency never satisfied)')
                    continue
                if info['state'] == 'PENDING' and reason in STUCK:
                    self.status[cell.work_dir] = ('stuck', f'job {job} pending ({reason}) '
                                                  f'can never start: {STUCK[reason]}')
                    continue
                state = 'pending' if info['state'] == 'PENDING' else 'running'
                detail = f'({reason})' if state == 'pending' and reason not in ('', 'None') \
                    else ''
                self.status[cell.work_dir] = (state, detail)
                continue
            self.status[cell.work_dir] = self._ended(cell, job, info)

    @staticmethod
    def _after(cell):
        return 'its training cell' if cell.parent is not None else 'a job it waited for'

    @staticmethod
    def _settled(cell, job):
        record = read_job_record(cell)
        return record is not None and record['job_id'] == str(job) and \
            record['rc'] != REQUEUE_EXIT

    def _ended(self, cell, job, info):
        record = read_job_record(cell)
        if record is not None and record['job_id'] == str(job):
            if record['rc'] == 0:
                return self._finished(cell, job)
            if record['rc'] == REQUEUE_EXIT and isinstance(cell, Cell):
                # saved at a signal, but Slurm did not run the job again (requeue refused, or
                # the restart failed): resubmitted with --resume, by --wait as well
                return ('stopped', f'job {job} stopped at a signal with a checkpoint saved '
                        f'and was not restarted ({info["state"] if info else "gone"})')
            why = f'exit code {record["rc"]}'
        elif info is not None:
            why = f'{info["state"]}' + (f', exit code {info["exit_code"]}'
                                        if info.get('exit_code') else '')
            if info.get('reason') in NEVER:
                return ('failed', f'job {job}: {self._after(cell)} failed (dependency never '
                        'satisfied)')
            if info.get('reason') not in (None, '', 'None'):
                why += f', reason {info["reason"]}'
        else:
            return ('vanished', f'job {job} left the queue without a record')
        return ('failed', f'job {job}: {why}')

    def _finished(self, cell, job):
        if isinstance(cell, EvalJob):
            missing = cell.missing(self.suite)
            if missing:
                return ('failed', f'job {job}: no result for {", ".join(missing)} at its end')
            cell.state = 'done'
            return ('done', '')
        if isinstance(cell, ReportJob):
            return ('done', '')
        result = self.collect(cell)
        if result['missing']:
            return ('failed', f'job {job}: no {", ".join(result["missing"])} at its end')
        marker = read_marker(cell.work_dir) or {}
        extra = dict(slurm=marker['slurm']) if marker.get('slurm') else {}
        write_marker(cell, 'done', metrics=result['metrics'], step=result['step'],
                     checkpoint=result['checkpoint'], sha256=result['sha256'],
                     wall_s=result.get('wall_s'), **extra)
        cell.state, cell.result = 'done', result
        return ('done', '')

    # -- what the queued jobs asked for --
    def changed_options(self, dry_run=False):
        """Say when queued jobs were submitted with other options than this run's."""
        changed, examples = [], []
        for unit in self.units:
            if self.status[unit.work_dir][0] not in ('pending', 'running', 'stuck'):
                continue
            record = slurm_record(unit)
            old = _asked(record.get('command'))
            now = [a for a in sbatch_options(unit, self.launcher, self.gres(dry_run))
                   if not a.startswith(_VOLATILE)]
            if old is None or old == now:
                continue
            changed.append(record['job_id'])
            key = {a.split('=')[0]: a for a in now}
            diff = [f'{a} (now {key.get(a.split("=")[0], "not asked")})' for a in old
                    if a not in now]
            diff += [f'{b} (not asked then)' for b in now if b not in old and
                     b.split('=')[0] not in {a.split('=')[0] for a in old}]
            examples += [d for d in diff if d not in examples]
        if changed:
            self.echo(f'{len(changed)} queued job(s) were submitted with other options than '
                      f'this command\'s: {", ".join(examples[:4])}; queued jobs keep the '
                      f'options they were submitted with. To replace them: scancel '
                      f'{" ".join(changed)}, then run this command again (it resubmits them '
                      'with its options).')
        return changed

    # -- submitting --
    def _active(self):
        return sum(s in ('pending', 'running') for s, _ in self.status.values())

    def submit_ready(self, dry_run=False):
        """Submit the jobs that need one (at most max_jobs queued; the report job last, once
        nothing else is left to submit); returns how many."""
        submitted = 0
        self.capped = False
        for cell in self.units:
            if cell is self.report:
                continue
            state, _ = self.status[cell.work_dir]
            if state not in ('new', 'partial', 'failed', 'vanished', 'stopped'):
                continue
            if state == 'stopped':
                if self.restarts.get(cell.work_dir, 0) >= MAX_RESTARTS:
                    continue
            elif cell.work_dir in self.submitted_here:
                continue  # a job that failed after its submission by this run stays failed
            dependency = None
            if cell.parent is not None:
                pstate, _ = self.status[cell.parent.work_dir]
                if pstate in ('pending', 'running'):
                    dependency = self._job(cell.parent)
                elif pstate == 'would submit':
                    dependency = f'<job of {cell.parent.name}>'
                elif pstate != 'done':
                    continue  # after its training cell is (re)submitted
            if self.max_jobs and self._active() >= self.max_jobs:
                self.capped = True
                break
            self._submit(cell, dependency, dry_run)
            submitted += 1
        if self.report is not None and self._report_due(submitted):
            self._submit_report(dry_run)
            submitted += 1
        return submitted

    def _report_due(self, submitted):
        """The report job goes (again) after all others once nothing is left to submit: when
        this pass queued a job, or it is new / failed / vanished while others are queued.
        With ``wait`` the waiting process writes the results itself: a report job is only
        replaced (should the waiting process be stopped, a later run submits one)."""
        if self.capped:
            return False
        state, _ = self.status[self.report.work_dir]
        if self.wait and state not in ('pending', 'running'):
            return False
        queued = any(self.status[u.work_dir][0] in ('pending', 'running', 'would submit')
                     for u in self.units if u is not self.report)
        if submitted:
            return True
        return queued and state in ('new', 'partial', 'failed', 'vanished') and \
            self.report.work_dir not in self.submitted_here

    def _submit_report(self, dry_run):
        state, _ = self.status[self.report.work_dir]
        old = self._job(self.report)
        if old and state in ('pending', 'running', 'stuck') and not dry_run:
            scancel(old)  # it waits for jobs that were replaced: the new one waits for all
        after = [self._job(u) for u in self.units if u is not self.report and
                 self.status[u.work_dir][0] in ('pending', 'running')]
        if dry_run:
            after = [f'<job of {u.name}>' if self.status[u.work_dir][0] == 'would submit'
                     else self._job(u) for u in self.units if u is not self.report and
                     self.status[u.work_dir][0] in ('pending', 'running', 'would submit')]
        self._submit(self.report, ':'.join(a for a in after if a) or None, dry_run)

    def _retire(self, cell):
        """Before a stopped cell is resubmitted: its old job must not come back beside the new
        one, and jobs queued after the old job wait for the new one instead."""
        old = str(self._job(cell))
        self.echo(f'{cell.name}: {self.status[cell.work_dir][1]}: resubmitting it (it resumes '
                  'from that checkpoint)')
        scancel(old)
        self.restarts[cell.work_dir] = self.restarts.get(cell.work_dir, 0) + 1
        for child in self.units:
            slurm = slurm_record(child)
            # (pending on the old job, or already cancelled for it: dependency never satisfied)
            if child.parent is cell and slurm.get('dependency') == old and \
                    self.status[child.work_dir][0] in ('pending', 'failed'):
                scancel(slurm.get('job_id'))
                self.status[child.work_dir] = ('partial', '')
                self.submitted_here.discard(child.work_dir)

    def _submit(self, cell, dependency, dry_run):
        if self.status[cell.work_dir][0] == 'stopped' and not dry_run:
            self._retire(cell)
        gres = self.gres(dry_run)
        script = job_script(cell, self.launcher, gres, self.report_argv)
        opts = sbatch_options(cell, self.launcher, gres, dependency)
        argv = ['sbatch', '--parsable', *opts]
        self.submitted_here.add(cell.work_dir)
        if dry_run:
            self.echo(f'# {cell.name}: ' + ' '.join(shlex.quote(a) for a in argv) +
                      ' <<\'EOF\'\n' + script + 'EOF')
            self.status[cell.work_dir] = ('would submit', '')
            return
        if isinstance(cell, EvalJob):
            workdir.makedirs(cell.work_dir, cell.root)
            workdir.makedirs(cache_dir(cell.train), cell.root)
        elif isinstance(cell, Cell):
            make_work_dir(cell)
        else:
            workdir.makedirs(cell.work_dir)
        path = _script_path(cell)
        workdir.write_text(path, script, cell.root)
        # Slurm opens --output by name, following links: it must be a file we made
        workdir.create_log(log_path(cell), cell.root)
        r = _run([*argv, path])
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or ['no output'])[-1]
            raise UserInputError(f'sbatch refused {cell.name}: {why} (command: '
                                 f'{" ".join(shlex.quote(a) for a in argv)} {path})')
        job = r.stdout.strip().split(';')[0]
        if not workdir.JOB_ID.match(job):
            raise UserInputError(f'sbatch answered {workdir.shown(r.stdout.strip())}, not a job '
                                 f'id, for {cell.name}.')
        old_record = slurm_record(cell)
        history = list(old_record.get('history', []))
        if old_record.get('job_id'):
            history.append(old_record['job_id'])
        record = dict(job_id=job, command=' '.join(shlex.quote(a) for a in [*argv, path]),
                      submitted=time.strftime('%Y-%m-%d %H:%M:%S'), history=history)
        if isinstance(cell, ReportJob):
            record['after'] = dependency.split(':') if dependency else []
        else:
            record['dependency'] = dependency
        _save_record(cell, record)
        shown = dependency if not isinstance(cell, ReportJob) or not dependency else \
            f'{len(dependency.split(":"))} job(s)'
        after = f', after {shown}' if dependency else ''
        self.status[cell.work_dir] = ('pending', f'(submitted{after})')

    # -- the table --
    def table(self):
        rows = [('job', 'id', 'state', '')]
        for cell in self.units:
            state, detail = self.status[cell.work_dir]
            job = self._job(cell) or '-'
            rows.append((cell.name, str(job), state, detail))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ['  '.join(r[i].ljust(widths[i]) for i in range(3)) + '  ' + r[3]
                 for r in rows]
        return '\n'.join(line.rstrip() for line in lines)

    def counts(self):
        out = {}
        for state, _ in self.status.values():
            out[state] = out.get(state, 0) + 1
        return ', '.join(f'{n} {s}' for s, n in sorted(out.items()))

    def show_failures(self):
        for cell in self.units:
            state, detail = self.status[cell.work_dir]
            if state in ('failed', 'vanished', 'stopped'):
                log = log_path(cell)
                self.echo(f'{cell.name}: {state}: {detail}; the error is in {_short(log)}, '
                          'last lines:\n' + workdir.tail(log, 15, cell.root))
            elif state == 'stuck':
                self.echo(f'{cell.name}: stuck: {detail}. It is not waited on: scancel '
                          f'{self._job(cell)}, then run this command again with options that '
                          f'fit the partition (sinfo -N -p {self.launcher.partition} -o '
                          '"%N %c %m %G": CPUs, memory (MB) and GRES per node).')

    def _waiting(self):
        return any(s in ('pending', 'running') for s, _ in self.status.values())

    def run(self, dry_run=False):
        """One pass (or, with ``wait``, until every job has ended); returns the failed jobs."""
        self.refresh()
        if not self.act:
            return self.failed()
        self.show_failures()
        self.changed_options(dry_run)
        n = self.submit_ready(dry_run)
        if dry_run:
            return []
        self.echo(f'submitted {n} job(s)' if n else 'submitted nothing (every job is done or '
                  'queued)' if all(s[0] in ('done', 'pending', 'running')
                                  for s in self.status.values()) else 'submitted nothing')
        self.echo(self.table())
        if self.wait:
            last = None
            while self._waiting():
                time.sleep(self.poll)
                self.refresh()
                self.submit_ready()
                line = f'{time.strftime("%H:%M:%S")} {self.counts()}'
                if line.split(' ', 1)[1] != last:
                    self.echo(line)
                    last = line.split(' ', 1)[1]
            self.echo(self.table())
            self.show_failures()
        return self.failed()

    def failed(self):
        return [c for c in self.units
                if self.status[c.work_dir][0] in ('failed', 'vanished', 'stopped', 'stuck')]

    def all_done(self):
        """Every cell and evaluation job done (the report job aside: the caller writes the
        results when it finds everything done)."""
        return all(self.status[u.work_dir][0] == 'done' for u in self.units
                   if u is not self.report)


def _short(path):
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def evaluation_jobs(suite, cells):
    """One :class:`EvalJob` per training cell whose arm has evaluation stages."""
    jobs = []
    for cell in cells:
        if cell.stage != 'train':
            continue
        stages = [s for s in getattr(suite, 'evaluation', None) or []
                  if s.arms is None or cell.arm in s.arms]
        if stages:
            jobs.append(EvalJob(cell, stages))
    return jobs


def run_slurm(cells, launcher, dry_run=False, max_jobs=None, wait=False, poll=30.0, echo=print,
              collect=cell_result, suite=None, work_root=None, cfg_options=None,
              downstream_options=None, report=False):
    """The slurm path of :func:`~mmtlalign.benchmark.runner.run_suite`: every cell, its
    evaluation job and the report job (``suite`` given) as batch jobs.

    ``report``: the report job itself (look and collect only, submit nothing).

    Returns:
        (whether every cell and evaluation is done, list of failed jobs)
    """
    if max_jobs is not None and max_jobs < 1:
        raise UserInputError(f'--max-jobs must be >= 1, got {max_jobs}.')
    if not dry_run:
        check_client()
    evaluation = []
    if suite is not None and getattr(suite, 'evaluation', None):
        # (on a copy: the runner reports the stages without data once more, in the results)
        suite = copy.copy(suite)
        check_data(suite, echo if not report else lambda line: None)
        evaluation = evaluation_jobs(suite, cells)
    report_job = report_argv = None
    if suite is not None and work_root is not None:
        report_job = ReportJob(suite, work_root)
        report_argv = report_command(suite, work_root, launcher, cfg_options,
                                     downstream_options)
    slurm = SlurmSuite(cells, launcher, echo, max_jobs=max_jobs, wait=wait, poll=poll,
                       collect=collect, evaluation=evaluation, report=report_job,
                       report_argv=report_argv, suite=suite, submit=not report)
    if report:
        failed = slurm.run()
        return slurm.all_done(), failed
    if not dry_run:
        slurm.check()
    if launcher.time is None and not dry_run:
        echo('note: no --time given, the jobs get the partition\'s default time limit; '
             f'training saves and requeues {launcher.signal_seconds} s before it.')
    failed = slurm.run(dry_run)
    if dry_run:
        return False, []
    if not slurm.all_done() and not wait:
        left = sum(slurm.status[u.work_dir][0] != 'done' for u in slurm.units
                   if u is not report_job)
        if report_job is not None and slurm.status[report_job.work_dir][0] in ('pending',
                                                                               'running'):
            tail = (f'the report job {slurm._job(report_job)} writes '
                    f'{_short(osp.join(work_root, "results.md"))} (.json, .png) when every job '
                    'has ended; run the same command again to see their state and resubmit '
                    'failed ones (or add --wait).')
        else:
            tail = ('run the same command again to see their state, resubmit failed ones and '
                    'collect the results (or add --wait).')
        echo(f'{left} job(s) not finished: {tail}')
    return slurm.all_done(), failed
