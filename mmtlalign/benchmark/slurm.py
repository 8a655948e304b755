"""Every cell of a suite as its own Slurm batch job (``tools/benchmark.py --launcher slurm``).

Plain ``sbatch`` scripts, not submitit: the job must run ``tools/slurm_train.sh`` (``srun`` +
mmengine's ``--launcher slurm``), exactly what a user runs by hand, and submitit submits a
pickled Python function run by its own ``srun python -m submitit...`` wrapper, with its own
requeue protocol around that function; using it would mean a second way of launching training
(in-process, outside ``tools/train.py``) and still our own code for the part that matters, saving
at the signal (``mmtlalign.engine.preemption``). With ``sbatch`` the requeue is three lines of
the script: training exits 75 after saving, the script runs ``scontrol requeue``.

A submission run:

- reads each cell's ``benchmark_cell.json`` (its last job id and submission command) and asks
  the scheduler (``squeue``; ``scontrol show job`` / ``sacct`` for jobs that have left the
  queue) and the job's own record (``benchmark_job.json``, written by the job script when
  training ends) what became of it: pending (with the reason) / running / done / failed (with
  the reason and the log tail) / vanished (left the queue without a record) / stopped (saved
  at a signal, but Slurm did not run the job again: resubmitted, by ``wait`` as well);
- collects finished cells (metrics from their logs, as the local runner does);
- submits every cell that is not done or queued (new, failed or vanished; the job resumes with
  ``--resume`` when the work dir has a checkpoint), at most ``max_jobs`` queued at once;
  a downstream cell goes in with ``--dependency=afterok:<its training cell's job>`` and reads
  that cell's ``last_checkpoint`` when it starts;
- with ``wait``: polls until every cell has ended, submitting more as the cap allows.

Each job: ``--requeue --signal=USR1@180`` (a warning before the time limit), output appended to
the cell's ``benchmark_output.log``, which this tool creates itself (``O_NOFOLLOW``) before
``sbatch`` so that Slurm's ``--output ... --open-mode=append`` never follows a planted link.

Records are input, not trusted state: ``benchmark_cell.json`` and ``benchmark_job.json`` are
schema-checked (:mod:`.cells`, :data:`JOB_RECORD_SCHEMA`; job ids ``^\\d+(_\\d+)?$``) before
an id reaches a Slurm command, and the commands get ids where no option can be (``--jobs=ID``,
``scancel -- ID``). The job script writes its record and reads the training cell's
``last_checkpoint`` through :mod:`mmtlalign.workdir` too (loaded without torch).
"""
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import time

from .. import workdir
from ..errors import UserInputError
from ..paths import tool_path
from . import launch as launching
from .cells import make_work_dir, read_marker, write_marker

JOB_RECORD = 'benchmark_job.json'
JOB_RECORD_SCHEMA = {'job_id': workdir.is_job_id, 'rc': workdir.is_int,
                     'ended?': workdir.is_line}
REQUEUE_EXIT = 75  # mmtlalign.engine.preemption.REQUEUE_EXIT (not imported: no torch here)
ACTIVE = {'PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED', 'REQUEUE_HOLD',
          'REQUEUE_FED', 'RESIZING', 'SUSPENDED', 'STAGE_OUT', 'SIGNALING'}
NEVER = ('DependencyNeverSatisfied',)
MAX_RESTARTS = 20  # resubmissions of a cell stopped at a signal, per run of the command


def _run(argv, timeout=60):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UserInputError(f'{argv[0]} not found: --launcher slurm needs the Slurm client '
                             'commands (sbatch, squeue, scontrol) on PATH.') from None


def check_client():
    missing = [c for c in ('sbatch', 'squeue', 'scontrol') if shutil.which(c) is None]
    if missing:
        raise UserInputError(f'--launcher slurm needs the Slurm commands {", ".join(missing)} on '
                             'PATH (run on a login node of the cluster, or install '
                             'slurm-client).')


def partition_has_gpus(partition):
    """Whether a node of ``partition`` has GPU GRES (``sinfo %G``)."""
    r = _run(['sinfo', '-h', '-p', partition, '-o', '%G'])
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ['no output'])[-1]
        raise UserInputError(f'cannot reach the Slurm controller (sinfo: {last}); run this on a '
                             'login node of the cluster, or set SLURM_CONF to its slurm.conf.')
    if not r.stdout.strip():
        raise UserInputError(f'slurm partition {partition!r} does not exist (sinfo lists none); '
                             'see `sinfo -s` for the partitions.')
    return 'gpu' in r.stdout


def job_name(cell):
    return f'{cell.arm}-s{cell.seed}' + ('' if cell.stage == 'train' else f'-{cell.stage}')


# --------------------------------------------------------------------------------------------
# the job script
# --------------------------------------------------------------------------------------------
def sbatch_options(cell, launcher, gres, dependency=None):
    """``#SBATCH`` options of a cell's job (``launcher.slurm_args`` last: they win)."""
    gpus, per_node = launcher.gpus, min(launcher.gpus, launcher.gpus_per_node)
    opts = [f'--job-name={job_name(cell)}', f'--partition={launcher.partition}',
            f'--ntasks={gpus}']
    if per_node > 0:
        opts += [f'--nodes={-(-gpus // per_node)}', f'--ntasks-per-node={per_node}']
        if gres:
            opts.append(f'--gres=gpu:{per_node}')
    opts += [f'--cpus-per-task={launcher.cpus_per_task}',
             f'--output={osp.join(cell.work_dir, launching.LOG)}', '--open-mode=append',
             '--requeue', f'--signal=USR1@{launcher.signal_seconds}']
    if launcher.time:
        opts.append(f'--time={launcher.time}')
    if dependency:
        opts.append(f'--dependency=afterok:{dependency}')
    opts += shlex.split(launcher.slurm_args or '')
    return opts


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


def job_script(cell, launcher, gres):
    """The batch script: train through tools/slurm_train.sh, resume when there is a checkpoint,
    requeue itself when training stopped at a signal, record how it ended."""
    q = shlex.quote
    work = cell.work_dir
    options = {k: v for k, v in cell.options.items() if k != cell.checkpoint_key}
    cfg_args = [q(a) for a in launching.option_args(options)]
    lines = [
        '#!/usr/bin/env bash',
        f'# {cell.name}: written by tools/benchmark.py --launcher slurm',
        'set -uo pipefail',
        f'cd {q(os.getcwd())}',
        f'WORK={q(work)}',
        'echo "# $(date "+%Y-%m-%d %H:%M:%S") job $SLURM_JOB_ID on $(hostname)'
        ' (restart ${SLURM_RESTART_COUNT:-0})"',
        'RESUME=',  # (not an array: "${A[@]}" of an empty one fails under set -u in bash < 4.4)
        '[[ -s "$WORK/last_checkpoint" ]] && RESUME=--resume',
    ]
    if cell.parent is not None:
        parent_ckpt = osp.join(cell.parent.work_dir, 'last_checkpoint')
        lines += [
            # checked: one line naming a file inside the training cell's work dir
            f'CKPT=$({workdir_call("last-checkpoint", cell.parent.work_dir)})',
            'if [[ ! -s "$CKPT" ]]; then',
            f'  echo "error: {cell.parent.name} left no checkpoint ({parent_ckpt})" >&2',
            '  exit 1',
            'fi',
        ]
        cfg_args.append(f'{q(cell.checkpoint_key + "=")}"$CKPT"')
    env = (f'PYTHON={q(launcher.python)} GPUS={launcher.gpus} '
           f'GPUS_PER_NODE={min(launcher.gpus, launcher.gpus_per_node)} '
           f'CPUS_PER_TASK={launcher.cpus_per_task}')
    train = (f'{env} bash {q(tool_path("slurm_train.sh"))} {q(launcher.partition)} '
             f'{q(job_name(cell))} {q(cell.config)} "$WORK" $RESUME')
    if cfg_args:
        train += ' --cfg-options ' + ' '.join(cfg_args)
    # (a temporary file under a fresh name, renamed: never written through a planted link)
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
    return workdir.read_json(osp.join(cell.work_dir, JOB_RECORD), JOB_RECORD_SCHEMA,
                             what='Slurm job record', fix='delete it (the cell is then '
                             'looked up in the queue and resubmitted when its job is gone)')


def scancel(job):
    """Cancel one job by its (checked) id; ``--`` ends the options."""
    if not workdir.JOB_ID.match(str(job)):
        raise UserInputError(f'not a Slurm job id: {workdir.shown(job)}.')
    return _run(['scancel', '--', str(job)])


class SlurmSuite:
    """Submits and follows the cells of one suite (see the module docstring)."""

    def __init__(self, cells, launcher, echo=print, max_jobs=None, wait=False, poll=30.0,
                 collect=None):
        self.cells, self.launcher, self.echo = cells, launcher, echo
        self.max_jobs = max_jobs
        self.wait, self.poll = wait, poll
        self.collect = collect  # cell -> result dict (runner.cell_result)
        self.status = {}  # cell work dir -> (state, detail)
        self.submitted_here = set()
        self.restarts = {}  # cell work dir -> resubmissions of a stopped cell by this run
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

    def _job(self, cell):
        return ((read_marker(cell.work_dir) or {}).get('slurm') or {}).get('job_id')

    # -- one look at every cell --
    def refresh(self):
        jobs = {c.work_dir: self._job(c) for c in self.cells if c.state != 'done'}
        known = query([j for j in jobs.values() if j])
        for cell in self.cells:
            if cell.state == 'done':
                self.status[cell.work_dir] = ('done', '')
                continue
            job = jobs[cell.work_dir]
            if not job:
                self.status[cell.work_dir] = ('new' if cell.state == 'new' else 'partial', '')
                continue
            info = known.get(job)
            if not (info and info['state'] in ACTIVE) and not self._settled(cell, job):
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
                    scancel(job)
                    self.status[cell.work_dir] = ('failed', f'job {job}: its training cell '
                                                  'failed (dependency never satisfied)')
                    continue
                state = 'pending' if info['state'] == 'PENDING' else 'running'
                detail = f'({reason})' if state == 'pending' and reason not in ('', 'None') \
                    else ''
                self.status[cell.work_dir] = (state, detail)
                continue
            self.status[cell.work_dir] = self._ended(cell, job, info)

    @staticmethod
    def _settled(cell, job):
        record = read_job_record(cell)
        return record is not None and record['job_id'] == str(job) and \
            record['rc'] != REQUEUE_EXIT

    def _ended(self, cell, job, info):
        record = read_job_record(cell)
        if record is not None and record['job_id'] == str(job):
            if record['rc'] == 0:
                result = self.collect(cell)
                if result['missing']:
                    return ('failed', f'job {job}: no {", ".join(result["missing"])} at its '
                            'end')
                marker = read_marker(cell.work_dir) or {}
                extra = dict(slurm=marker['slurm']) if marker.get('slurm') else {}
                write_marker(cell, 'done', metrics=result['metrics'], step=result['step'],
                             checkpoint=result['checkpoint'], sha256=result['sha256'],
                             wall_s=result.get('wall_s'), **extra)
                cell.state, cell.result = 'done', result
                return ('done', '')
            if record['rc'] == REQUEUE_EXIT:
                # saved at a signal, but Slurm did not run the job again (requeue refused, or
                # the restart failed): resubmitted with --resume, by --wait as well
                return ('stopped', f'job {job} stopped at a signal with a checkpoint saved '
                        f'and was not restarted ({info["state"] if info else "gone"})')
            why = f'exit code {record["rc"]}'
        elif info is not None:
            why = f'{info["state"]}' + (f', exit code {info["exit_code"]}'
                                        if info.get('exit_code') else '')
            if info.get('reason') not in (None, '', 'None'):
                why += f', reason {info["reason"]}'
        else:
            return ('vanished', f'job {job} left the queue without a record')
        return ('failed', f'job {job}: {why}')

    # -- submitting --
    def _active(self):
        return sum(s in ('pending', 'running') for s, _ in self.status.values())

    def submit_ready(self, dry_run=False):
        """Submit the cells that need a job (at most max_jobs queued); returns how many."""
        submitted = 0
        for cell in self.cells:
            state, _ = self.status[cell.work_dir]
            if state not in ('new', 'partial', 'failed', 'vanished', 'stopped'):
                continue
            if state == 'stopped':
                if self.restarts.get(cell.work_dir, 0) >= MAX_RESTARTS:
                    continue
            elif cell.work_dir in self.submitted_here:
                continue  # a cell that failed after its submission by this run stays failed
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
                break
            self._submit(cell, dependency, dry_run)
            submitted += 1
        return submitted

    def _retire(self, cell):
        """Before a stopped cell is resubmitted: its old job must not come back beside the new
        one, and cells queued after the old job wait for the new one instead."""
        old = str(self._job(cell))
        self.echo(f'{cell.name}: {self.status[cell.work_dir][1]}: resubmitting it (it resumes '
                  'from that checkpoint)')
        scancel(old)
        self.restarts[cell.work_dir] = self.restarts.get(cell.work_dir, 0) + 1
        for child in self.cells:
            slurm = (read_marker(child.work_dir) or {}).get('slurm') or {}
            # (pending on the old job, or already cancelled for it: dependency never satisfied)
            if child.parent is cell and str(slurm.get('dependency')) == old and \
                    self.status[child.work_dir][0] in ('pending', 'failed'):
                scancel(slurm.get('job_id'))
                self.status[child.work_dir] = ('partial', '')
                self.submitted_here.discard(child.work_dir)

    def _submit(self, cell, dependency, dry_run):
        if self.status[cell.work_dir][0] == 'stopped' and not dry_run:
            self._retire(cell)
        gres = self.gres(dry_run)
        script = job_script(cell, self.launcher, gres)
        opts = sbatch_options(cell, self.launcher, gres, dependency)
        argv = ['sbatch', '--parsable', *opts]
        self.submitted_here.add(cell.work_dir)
        if dry_run:
            self.echo(f'# {cell.name}: ' + ' '.join(shlex.quote(a) for a in argv) +
                      ' <<\'EOF\'\n' + script + 'EOF')
            self.status[cell.work_dir] = ('would submit', '')
            return
        make_work_dir(cell)
        path = osp.join(cell.work_dir, 'benchmark_job.sh')
        workdir.write_text(path, script, cell.root)
        # Slurm opens --output by name, following links: it must be a file we made
        workdir.create_log(osp.join(cell.work_dir, launching.LOG), cell.root)
        r = _run([*argv, path])
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or ['no output'])[-1]
            raise UserInputError(f'sbatch refused {cell.name}: {why} (command: '
                                 f'{" ".join(shlex.quote(a) for a in argv)} {path})')
        job = r.stdout.strip().split(';')[0]
        if not workdir.JOB_ID.match(job):
            raise UserInputError(f'sbatch answered {workdir.shown(r.stdout.strip())}, not a job '
                                 f'id, for {cell.name}.')
        marker = read_marker(cell.work_dir) or {}
        history = list((marker.get('slurm') or {}).get('history', []))
        old = (marker.get('slurm') or {}).get('job_id')
        if old:
            history.append(old)
        write_marker(cell, 'submitted', slurm=dict(
            job_id=job, command=' '.join(shlex.quote(a) for a in [*argv, path]),
            submitted=time.strftime('%Y-%m-%d %H:%M:%S'), dependency=dependency,
            history=history))
        after = f', after {dependency}' if dependency else ''
        self.status[cell.work_dir] = ('pending', f'(submitted{after})')

    # -- the table --
    def table(self):
        rows = [('cell', 'job', 'state', '')]
        for cell in self.cells:
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
        for cell in self.cells:
            state, detail = self.status[cell.work_dir]
            if state in ('failed', 'vanished', 'stopped'):
                self.echo(f'{cell.name}: {state}: {detail}; last lines of '
                          f'{osp.relpath(osp.join(cell.work_dir, launching.LOG))}:\n' +
                          launching.log_tail(cell))

    def run(self, dry_run=False):
        """One pass (or, with ``wait``, until every cell has ended); returns the failed cells."""
        self.refresh()
        self.show_failures()
        n = self.submit_ready(dry_run)
        if dry_run:
            return []
        self.echo(f'submitted {n} job(s)' if n else 'submitted nothing (every cell is done or '
                  'queued)' if all(s[0] in ('done', 'pending', 'running')
                                  for s in self.status.values()) else 'submitted nothing')
        self.echo(self.table())
        if self.wait:
            last = None
            while any(s in ('pending', 'running') for s, _ in self.status.values()):
                time.sleep(self.poll)
                self.refresh()
                self.submit_ready()
                line = f'{time.strftime("%H:%M:%S")} {self.counts()}'
                if line.split(' ', 1)[1] != last:
                    self.echo(line)
                    last = line.split(' ', 1)[1]
            self.echo(self.table())
            self.show_failures()
        return [c for c in self.cells
                if self.status[c.work_dir][0] in ('failed', 'vanished', 'stopped')]

    def all_done(self):
        return all(s == 'done' for s, _ in self.status.values())


def run_slurm(cells, launcher, dry_run=False, max_jobs=None, wait=False, poll=30.0, echo=print,
              collect=None):
    """The slurm path of :func:`~mmtlalign.benchmark.runner.run_suite`.

    Returns:
        (whether every cell is done, list of failed cells)
    """
    if max_jobs is not None and max_jobs < 1:
        raise UserInputError(f'--max-jobs must be >= 1, got {max_jobs}.')
    if not dry_run:
        check_client()
    if launcher.time is None and not dry_run:
        echo('note: no --time given, the jobs get the partition\'s default time limit; '
             f'training saves and requeues {launcher.signal_seconds} s before it.')
    suite = SlurmSuite(cells, launcher, echo, max_jobs=max_jobs, wait=wait, poll=poll,
                       collect=collect)
    failed = suite.run(dry_run)
    if dry_run:
        return False, []
    if not suite.all_done() and not wait:
        left = sum(s not in ('done',) for s, _ in suite.status.values())
        echo(f'{left} cell(s) not finished: run the same command again to see their state, '
             'resubmit failed ones and collect the results (or add --wait).')
    return suite.all_done(), failed
