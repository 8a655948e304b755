"""Launching a cell exactly like a user launches ``tools/train.py``.

- ``local``: ``python tools/train.py CONFIG --work-dir DIR [--resume] --cfg-options ...``;
- ``--gpus N``: ``tools/dist_train.sh CONFIG N ...`` (torchrun; ``PORT`` from ``--port``);
- ``--launcher slurm``: ``GPUS=N tools/slurm_train.sh PARTITION JOB CONFIG DIR ...`` (srun).

Each cell's full output goes to ``<work_dir>/benchmark_output.log`` (opened ``O_NOFOLLOW |
O_APPEND`` through :mod:`mmtlalign.workdir`: a symlink planted there is refused, not appended
through); progress lines (epoch, iteration, loss, eta, validation) are parsed from it for the
console.
"""
import os
import os.path as osp
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from .. import workdir
from ..cli.cfg_options import option_args
from ..errors import UserInputError
from ..paths import project_root, tool_path

LOG = 'benchmark_output.log'
#: training processes running now (stopped by :func:`stop_all` when the benchmark is stopped)
RUNNING = set()


@dataclass
class Launcher:
    kind: str = 'local'  # 'local' | 'pytorch' (--gpus N) | 'slurm'
    gpus: int = 1
    gpus_per_node: int = 8
    partition: str = None
    port: int = None
    python: str = sys.executable
    # slurm (see mmtlalign.benchmark.slurm): sbatch options of every cell's job
    cpus_per_task: int = 5
    time: str = None  # --time, e.g. '72:00:00'
    slurm_args: str = ''  # more sbatch options, e.g. '--account=A --qos=Q'
    signal_seconds: int = 180  # --signal=USR1@N: warning before the time limit

    def check(self):
        if self.kind == 'slurm' and not self.partition:
            raise UserInputError('--launcher slurm needs --partition NAME (the slurm partition '
                                 'the cells\' jobs are submitted to).')
        if self.gpus < 1:
            raise UserInputError(f'--gpus must be >= 1, got {self.gpus}.')
        if self.gpus_per_node < 0:
            raise UserInputError(f'--gpus-per-node must be >= 0 (0: a CPU-only cluster), got '
                                 f'{self.gpus_per_node}.')
        if self.time is not None and not re.fullmatch(r'(\d+-)?\d+(:\d\d){0,2}', self.time):
            raise UserInputError(f'--time {self.time!r}: use Slurm\'s [DAYS-]HH:MM:SS, e.g. '
                                 '72:00:00 or 2-00:00:00.')
        return self


def train_args(cell, resume):
    """tools/train.py's arguments after CONFIG (and the launcher's own)."""
    args = ['--work-dir', cell.work_dir]
    if resume:
        args.append('--resume')
    if cell.options:
        args += ['--cfg-options', *option_args(cell.options)]
    return args


def command(cell, launcher, resume=False):
    """(argv, extra environment) that trains ``cell``."""
    if launcher.kind == 'local':
        return [launcher.python, tool_path('train.py'), cell.config,
                *train_args(cell, resume)], {}
    if launcher.kind == 'pytorch':
        env = {'PORT': str(launcher.port)} if launcher.port else {}
        return ['bash', tool_path('dist_train.sh'), cell.config,
                str(launcher.gpus), *train_args(cell, resume)], env
    if launcher.kind == 'slurm':
        job = f'{cell.arm}-s{cell.seed}' + ('' if cell.stage == 'train' else f'-{cell.stage}')
        env = {'GPUS': str(launcher.gpus),
               'GPUS_PER_NODE': str(min(launcher.gpus, launcher.gpus_per_node))}
        args = train_args(cell, resume)[2:]  # slurm_train.sh takes the work dir positionally
        return ['bash', tool_path('slurm_train.sh'), launcher.partition, job,
                cell.config, cell.work_dir, *args], env
    raise UserInputError(f'unknown launcher {launcher.kind!r}; use local, pytorch or slurm.')


def shell_line(argv, env):
    """One copy-pasteable shell line, paths relative to the working directory."""
    def short(a):
        return osp.relpath(a) if osp.isabs(a) and a.startswith(project_root()) else a
    argv = [short(a) for a in argv]
    if argv[0] == sys.executable:
        argv[0] = 'python'
    prefix = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())
    return (prefix + ' ' if prefix else '') + ' '.join(shlex.quote(a) for a in argv)


TRAIN_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\].*?eta: (\S+).*?'
                        r'loss: ([\d.]+)')
TRAIN_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\].*?eta: (\S+).*?loss: ([\d.]+)')
VAL_LINE = re.compile(r'(Epoch|Iter)\(val\)\s*\[(\d+)(?:/\d+)?\](?:\[\s*\d+/\d+\])?\s+(\S.*?)\s+'
                      r'data_time')


def progress_line(line):
    """A short status from one line of a training log, or None."""
    if 'Epoch(train)' in line:
        m = TRAIN_LINE.search(line)
        if m:
            ep, it, n, eta, loss = m.groups()
            return f'epoch {ep} iter {it}/{n}  loss {float(loss):.3f}  eta {eta}', False
    elif 'Iter(train)' in line:
        m = TRAIN_ITER.search(line)
        if m:
            it, n, eta, loss = m.groups()
            return f'iter {it}/{n}  loss {float(loss):.3f}  eta {eta}', False
    elif '(val)' in line:
        m = VAL_LINE.search(line)
        if m:
            kind, step, metrics = m.groups()
            return f'{kind.lower()} {step} validation: {metrics}', True
    return None


def run(cell, launcher, resume, prefix, echo=print, env=None, live=True):
    """Run one cell; its output goes to its log, progress to ``echo``. Returns (rc, seconds).

    ``env``: extra environment; ``live``: on a terminal, rewrite one status line in place
    (off when several cells run at once)."""
    argv, extra_env = command(cell, launcher, resume)
    workdir.makedirs(cell.work_dir, cell.root)
    env = dict(os.environ, **(env or {}), **extra_env)
    env['PYTHONPATH'] = project_root() + (os.pathsep + env['PYTHONPATH']
                                          if env.get('PYTHONPATH') else '')
    # idle OpenMP threads spin by default; on a shared CPU that slowed training many-fold
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    tty = live and sys.stdout.isatty()
    start = time.time()
    with workdir.open_append(osp.join(cell.work_dir, LOG), cell.root) as log:
        log.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")} {shell_line(argv, extra_env)}\n')
        log.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, bufsize=1)
        RUNNING.add(proc)
        shown = 0
        try:
            for line in proc.stdout:
                log.write(line)
                status = progress_line(line)
                if status is None:
                    continue
                msg, is_val = status
                if tty:
                    print('\r' + f'{prefix} {msg}'[:110].ljust(110), end='\n' if is_val else '',
                          flush=True)
                elif is_val or shown % 10 == 0:  # logs and pipes: a few lines per epoch
                    echo(f'{prefix} {msg}')
                shown += 1
            proc.wait()
        except BaseException:  # Ctrl-C: stop the child too, then let the caller report
            proc.terminate()
            proc.wait()
            raise
        finally:
            RUNNING.discard(proc)
    if tty:
        print('\r' + ' ' * 110 + '\r', end='', flush=True)
    return proc.returncode, time.time() - start


def stop_all():
    """Terminate the training processes still running (the benchmark itself is stopping);
    each keeps its last checkpoint, so the next run resumes it."""
    for proc in list(RUNNING):
        proc.terminate()
    for proc in list(RUNNING):
        proc.wait()


def log_tail(cell, n=15):
    return workdir.tail(osp.join(cell.work_dir, LOG), n, cell.root)


def stop_on_sigterm():
    """SIGTERM stops like Ctrl-C: the running cells' processes are stopped with us."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
