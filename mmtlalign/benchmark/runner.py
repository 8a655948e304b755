"""Run a suite: plan its cells, train them (finished ones skipped, interrupted ones resumed, each
downstream cell after the training cell whose checkpoint it starts from), evaluate every finished
cell, aggregate over seeds and write ``results.{json,md,png}``.
"""
import os
import os.path as osp
from concurrent import futures
from typing import Callable, List, NamedTuple, Optional

from .. import workdir
from ..cli.messages import warn
from ..errors import UserInputError
from . import launch as launching
from .cells import (
    cell_result,
    done_marker,
    expected_checkpoint,
    make_work_dir,
    plan_cells,
    write_marker,
)
from .evaluations import evaluate_cells
from .launch import Launcher
from .report import aggregate, summarise, write_all
from .slurm import run_slurm
from .suite import Suite


class SuiteRun(NamedTuple):
    """What :func:`run_suite` leaves."""
    results: Optional[dict]  # None for a dry run, or slurm cells still queued
    failed: List  # cells that failed (training, downstream or evaluation)
    cells: List  # every cell with its state and result (evaluation cells after training)


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f'{h}h {m:02d}m' if h else f'{m}m {s:02d}s' if m else f'{s}s'


def _short(path):
    """``path`` relative to the working directory when it lies below it."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def run_suite(suite: Suite, work_root: str, launcher: Launcher, cfg_options: Optional[dict] = None,
              downstream_options: Optional[dict] = None, dry_run: bool = False, jobs: int = 1,
              echo: Callable[[str], None] = print, max_jobs: Optional[int] = None,
              wait: bool = False, poll: float = 30.0, report: bool = False) -> SuiteRun:
    """Run (or with ``dry_run`` print) every cell of ``suite``; write the three results files.

    plan -> train -> evaluate -> aggregate -> write.

    Args:
        jobs (int): cells run side by side (local launcher only). Small models use a CPU core
            poorly with several threads: two one-thread cells on two cores train about twice
            as fast as one two-thread cell. Each cell gets ``cores // jobs`` OpenMP threads.

        max_jobs, wait, poll: slurm only (each cell its own batch job, see
            :mod:`mmtlalign.benchmark.slurm`): at most ``max_jobs`` queued at once; ``wait``
            polls every ``poll`` seconds until every cell has ended; ``report``: the suite's
            report job (collect what the jobs left and write the results, submit nothing).

    Returns:
        SuiteRun: ``results`` is None for a dry run, and with slurm without ``wait`` until
        every cell is done.
    """
    launcher.check()
    if jobs > 1 and launcher.kind != 'local':
        raise UserInputError('--jobs > 1 runs cells side by side on this machine; with --gpus '
                             'or slurm each cell already takes its GPUs: use --jobs 1.')
    work_root = osp.abspath(work_root)
    note = workdir.shared_access_note(work_root)
    if note:
        warn(note)
    cells = plan_cells(suite, work_root, cfg_options, downstream_options)
    counts = {s: sum(c.state == s for c in cells) for s in ('done', 'partial', 'new')}
    echo(f'suite {suite.name}: {len(suite.arms)} arm(s) x {len(suite.seeds)} seed(s)' +
         (f' x (1 + {len(suite.downstream)} downstream)' if suite.downstream else '') +
         f' = {len(cells)} cell(s) in {work_root}: {counts["done"]} finished, '
         f'{counts["partial"]} to resume, {counts["new"]} to run' +
         (f', {jobs} at a time' if jobs > 1 and not dry_run else ''))
    if launcher.kind == 'slurm':  # every cell its own batch job
        ended, failed, env = _train_slurm(cells, launcher, dry_run, max_jobs, wait, poll, echo,
                                          suite=suite, work_root=work_root,
                                          cfg_options=cfg_options,
                                          downstream_options=downstream_options, report=report)
    else:
        ended, failed, env = _train_here(suite, cells, launcher, dry_run, jobs, echo)
    if not ended:  # printed (dry run), or left to the cluster
        return SuiteRun(None, failed, cells)
    # evaluation stages (robustness, calibration...) on every finished cell's checkpoint
    cells, skipped = evaluate_cells(suite, cells, launcher, echo, jobs, env, failed)
    os.makedirs(work_root, exist_ok=True)
    results = aggregate(suite, cells, work_root)
    results['evaluation'] = summarise(suite, cells, skipped)
    results['files'] = write_all(results, work_root)
    return SuiteRun(results, failed, cells)


def _train_slurm(cells, launcher, dry_run, max_jobs, wait, poll, echo, report=False, **plan):
    """Submit (or follow) every cell, its evaluation job and the report job as batch jobs:
    ``(whether every cell has ended, failed cells, extra environment of the evaluations)``."""
    done, failed = run_slurm(cells, launcher, dry_run, max_jobs, wait, poll, echo,
                             collect=cell_result, report=report, **plan)
    failed = [c for c in failed if c in cells]  # (evaluation jobs: their stages, below)
    if dry_run or not (done or wait or report):
        return False, failed, {}
    for cell in cells:
        if cell.state == 'done' and not cell.result:
            cell.result = cell_result(cell)
    return True, failed, {}


def _train_here(suite, cells, launcher, dry_run, jobs, echo):
    """Train the unfinished cells on this machine (``jobs`` side by side): ``(True, failed
    cells, extra environment of the evaluations)``; with ``dry_run`` print their commands (and
    the evaluations') instead: ``(False, [], {})``."""
    run = _Run(cells, launcher, echo, jobs)
    for i, cell in enumerate(cells, 1):
        cell.prefix = f'[{i}/{len(cells)}] {cell.name}:'
        if cell.state == 'done':
            cell.result = cell_result(cell)
            shown = ', '.join(f'{k} {v:.2f}' for k, v in cell.result['metrics'].items())
            echo(f'{cell.prefix} finished earlier, skipped ({shown})')
        elif dry_run:
            run.attach_checkpoint(cell, dry_run=True)
            argv, env = launching.command(cell, launcher, cell.state == 'partial')
            echo(('# resume\n' if cell.state == 'partial' else '') +
                 launching.shell_line(argv, env))
    if dry_run:
        evaluate_cells(suite, cells, launcher, echo, dry_run=True)
        return False, [], {}
    run.all()
    return True, run.failed, run.env


class _Run:
    """Runs the unfinished cells, ``jobs`` at a time, each downstream cell after its parent."""

    def __init__(self, cells, launcher, echo, jobs):
        self.cells, self.launcher, self.echo, self.jobs = cells, launcher, echo, max(1, jobs)
        self.failed, self.walls = [], []
        self.todo = [c for c in cells if c.state != 'done']
        self.env = {}
        if self.jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
            self.env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // self.jobs))

    def attach_checkpoint(self, cell, dry_run=False):
        """A downstream cell starts from its training cell's last checkpoint."""
        if cell.parent is None:
            return
        ckpt = (expected_checkpoint(cell.parent) if dry_run else
                cell.parent.result.get('checkpoint'))  # checked against its marker's SHA-256
        if ckpt is None:
            raise UserInputError(f'{cell.parent.work_dir} finished without a checkpoint for '
                                 f'{cell.stage}; keep checkpointing on in its config.')
        cell.options[cell.checkpoint_key] = ckpt

    def all(self):
        pending, running = list(self.todo), {}
        pool = futures.ThreadPoolExecutor(self.jobs)
        try:
            self._loop(pool, pending, running)
        except BaseException:  # Ctrl-C / SIGTERM: stop the cells' processes too
            launching.stop_all()
            raise
        finally:
            pool.shutdown(wait=True)  # quick: the cells have finished or were stopped

    def _loop(self, pool, pending, running):
        while pending or running:
            for cell in list(pending):
                if len(running) >= self.jobs:
                    break
                parent = cell.parent
                if parent is not None and any(f is parent for f in self.failed):
                    self.echo(f'{cell.prefix} skipped (its training cell failed)')
                    self.failed.append(cell)
                    pending.remove(cell)
                elif parent is None or parent.state == 'done':
                    pending.remove(cell)
                    running[pool.submit(self.one, cell)] = cell
            if not running:
                break
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                future.result()  # re-raise what went wrong in the launcher itself

    def one(self, cell):
        self.attach_checkpoint(cell)
        resume = cell.state == 'partial'
        left = len(self.todo) - len(self.walls)
        eta = (f', about {fmt_time(sum(self.walls) / len(self.walls) * left / self.jobs)} '
               'left' if self.walls else '')
        self.echo(f'{cell.prefix} {"resuming from its last checkpoint" if resume else "training"}'
                  f' ({left} cell(s) to run{eta}) -- log: '
                  f'{_short(osp.join(cell.work_dir, launching.LOG))}')
        make_work_dir(cell)
        write_marker(cell, 'running')
        rc, wall = launching.run(cell, self.launcher, resume, cell.prefix, self.echo,
                                 env=self.env, live=self.jobs == 1)
        self.walls.append(wall)
        result = cell_result(cell)
        if rc != 0 or result['missing']:
            why = (f'exit code {rc}' if rc else
                   f'no {", ".join(result["missing"])} at its end')
            self.echo(f'{cell.prefix} FAILED ({why}); last lines of its log:\n' +
                      launching.log_tail(cell))
            self.failed.append(cell)
            return
        result['wall_s'] = wall
        write_marker(cell, 'done', **done_marker(result, wall_s=wall))
        cell.state, cell.result = 'done', result
        shown = ', '.join(f'{k} {v:.2f}' for k, v in result['metrics'].items())
        self.echo(f'{cell.prefix} done: {shown} ({fmt_time(wall)})')
