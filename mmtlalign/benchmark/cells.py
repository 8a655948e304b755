"""Cells of a suite (arm × seed, and each cell's downstream tasks), their work dirs and state.

A cell's work dir is ``WORK/<arm>/seed<seed>`` (downstream: ``WORK/<arm>/seed<seed>-<stage>``)
and holds the run's own outputs (mmengine's timestamped log folders, checkpoints,
``last_checkpoint``) plus ``benchmark_cell.json``, written by the benchmark: the cell's
settings when it starts, and its metrics when it has finished. A rerun

- skips a cell whose marker says ``done`` with the same settings,
- resumes (``tools/train.py --resume``) a cell that has a checkpoint but did not finish,
- starts a cell from scratch otherwise,
- and refuses a work dir that was run with other settings (it would mix two experiments).

The marker is input, not trusted state (a shared work dir may hold planted files): it is read
through :mod:`mmtlalign.workdir` (no symlink, owned by this user, size-capped) and checked
against :data:`MARKER_SCHEMA` (statuses from a fixed set, Slurm job ids ``^\\d+(_\\d+)?$``). A
cell is ``done`` only with the marker its run wrote at the end, holding the metrics, the
checkpoint (a file inside the cell's work dir) and that checkpoint's SHA-256, which must still
match: the results come from that marker, never from re-reading the scalars.

A run that has just ended is read once (:func:`cell_result`: its last validation's metrics, its
checkpoint and that checkpoint's SHA-256), and those go into its ``done`` marker.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Optional

from mmengine.config import Config

from .. import workdir as wd
from ..errors import UserInputError
from ..paths import project_root
from .metrics import last_validation

MARKER = 'benchmark_cell.json'
STATUSES = ('running', 'submitted', 'done')
SLURM_SCHEMA = {'job_id': wd.is_job_id, 'command?': wd.is_str, 'submitted?': wd.is_line,
                'dependency?': wd.optional(wd.is_job_id),
                'history?': wd.list_of(wd.is_job_id)}
MARKER_SCHEMA = {'status': wd.one_of(*STATUSES), 'settings': wd.is_dict,
                 'metrics?': wd.dict_of(wd.is_number), 'step?': wd.optional(wd.is_int),
                 'checkpoint?': wd.optional(wd.is_line), 'sha256?': wd.optional(wd.is_sha256),
                 'wall_s?': wd.optional(wd.is_number), 'slurm?': SLURM_SCHEMA}
#: what a ``done`` marker must hold besides
DONE_SCHEMA = {'metrics': wd.dict_of(wd.is_number), 'checkpoint': wd.is_line,
               'sha256': wd.is_sha256}


@dataclass
class Cell:
    arm: str
    seed: int
    stage: str  # 'train', a downstream task's name, or an evaluation stage's name
    config: str
    work_dir: str
    options: dict  # cfg-options of this cell, key -> value
    metrics: list  # of Metric
    parent: 'Cell' = None  # the training cell whose checkpoint a downstream cell starts from
    checkpoint_key: str = None
    root: str = None  # the suite's work dir (folders below it are made without following links)
    state: str = 'new'  # 'new' | 'partial' | 'done' (from the work dir, see cell_state)
    prefix: str = ''  # how progress lines name it, e.g. '[3/9] tlalign seed 1:'
    result: dict = field(default_factory=dict)

    @property
    def name(self):
        stage = '' if self.stage == 'train' else f' -> {self.stage}'
        return f'{self.arm} seed {self.seed}{stage}'

    def settings(self):
        """What makes two runs of this cell the same experiment."""
        options = {k: v for k, v in self.options.items() if k != self.checkpoint_key}
        return dict(arm=self.arm, seed=self.seed, stage=self.stage,
                    config=osp.relpath(self.config, project_root()),
                    options=_jsonable(options))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def plan_cells(suite, work_root, cfg_options=None, downstream_options=None):
    """All cells of ``suite`` under ``work_root``, training cells before their downstream ones.

    Args:
        cfg_options (dict, optional): ``--cfg-options``, applied to every training cell (after
            the suite's and the arm's own).
        downstream_options (dict, optional): applied to every downstream cell.
    """
    cells = []
    for seed in suite.seeds:
        for arm in suite.arms:
            options = {**suite.cfg_options, **arm.cfg_options, **(cfg_options or {}),
                       'randomness.seed': seed}
            cell = Cell(arm=arm.name, seed=seed, stage='train', config=arm.config,
                        work_dir=osp.join(work_root, arm.name, f'seed{seed}'), options=options,
                        metrics=[m for m in suite.metrics if m.stage == 'train'],
                        root=work_root)
            cells.append(cell)
            for down in suite.downstream:
                opts = {**down.cfg_options, **(downstream_options or {}),
                        'randomness.seed': seed}
                cells.append(Cell(
                    arm=arm.name, seed=seed, stage=down.name, config=down.config,
                    work_dir=osp.join(work_root, arm.name, f'seed{seed}-{down.name}'),
                    options=opts, metrics=down.metrics, parent=cell,
                    checkpoint_key=down.checkpoint_key, root=work_root))
    for cell in cells:
        cell.state = cell_state(cell)
    return cells


def read_marker(work_dir):
    """The checked marker of ``work_dir``, or None (a bad one: :class:`WorkDirError`)."""
    return wd.read_json(osp.join(work_dir, MARKER), MARKER_SCHEMA, what='benchmark cell marker',
                        fix=f'delete it to run that cell again ({_fix(work_dir)})')


def _fix(work_dir):
    return f'or delete the folder {wd.shown(work_dir)}'


def write_marker(cell, status, **extra):
    data = dict(status=status, settings=cell.settings(), **extra)
    wd.write_json(osp.join(cell.work_dir, MARKER), _jsonable(data), root=cell.root)


def make_work_dir(cell):
    """Make the cell's work dir below the suite's (no symlinked folder on the way)."""
    return wd.makedirs(cell.work_dir, cell.root)


def finished_result(cell, marker):
    """The result a ``done`` marker records, after checking that its checkpoint is a file
    inside the cell's work dir whose SHA-256 is the one recorded; else a one-line
    :class:`WorkDirError` naming the marker."""
    path = osp.join(cell.work_dir, MARKER)
    fix = f'delete it to run the cell again ({_fix(cell.work_dir)})'
    problem = wd.check(marker, DONE_SCHEMA)
    if problem:
        raise wd.WorkDirError(f'{wd.shown(path)} says done but is not the marker of a finished '
                              f'run ({problem}); {fix}.')
    ckpt = marker['checkpoint']
    if not wd.file_inside(ckpt, cell.work_dir):
        raise wd.WorkDirError(f'{wd.shown(path)} says done but its checkpoint {wd.shown(ckpt)} '
                              f'is not a file inside the cell\'s work dir; {fix}.')
    if wd.sha256(ckpt) != marker['sha256']:
        raise wd.WorkDirError(f'{wd.shown(path)} says done but its checkpoint {wd.shown(ckpt)} '
                              'is not the one the run saved (SHA-256 differs); ' + fix + '.')
    missing = [m.name for m in cell.metrics if m.name not in marker['metrics']]
    if missing:
        raise wd.WorkDirError(f'{wd.shown(path)} says done but records no {", ".join(missing)}; '
                              f'{fix}.')
    return dict(metrics=dict(marker['metrics']), step=marker.get('step'), missing=[],
                checkpoint=ckpt, sha256=marker['sha256'], wall_s=marker.get('wall_s'))


def cell_state(cell):
    """'done', 'partial' (a checkpoint to resume from) or 'new'; refuses foreign work dirs.
    A done cell's :attr:`Cell.result` is set from its (checked) marker."""
    marker = read_marker(cell.work_dir)
    if marker is not None and marker.get('settings') != cell.settings():
        raise UserInputError(
            f'{cell.work_dir} holds a run of {cell.name} with other settings '
            f'({_diff(marker.get("settings") or {}, cell.settings())}); pass another '
            '--work-dir, or delete that folder to run it again.')
    if marker is not None and marker['status'] == 'done':
        cell.result = finished_result(cell, marker)
        return 'done'
    if osp.isdir(cell.work_dir) and wd.read_last_checkpoint(cell.work_dir):
        return 'partial'
    return 'new'


def finished_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint a run left (its checked ``last_checkpoint``: one line naming a file
    inside ``work_dir``), or None."""
    return wd.read_last_checkpoint(work_dir)


def expected_checkpoint(cell: Cell) -> str:
    """Where a training cell's last checkpoint will be (for commands printed before it ran)."""
    if cell.state == 'done':
        return cell.result['checkpoint']
    try:
        cfg = Config.fromfile(cell.config)
        cfg.merge_from_dict(cell.options)
        train_cfg = cfg.train_cfg
        if train_cfg.get('by_epoch', 'max_epochs' in train_cfg):
            return osp.join(cell.work_dir, f'epoch_{train_cfg.max_epochs}.pth')
        return osp.join(cell.work_dir, f'iter_{train_cfg.max_iters}.pth')
    except Exception:  # noqa: BLE001  (only a printed hint; the real run reads last_checkpoint)
        return osp.join(cell.work_dir, 'epoch_N.pth')


def cell_result(cell: Cell) -> dict:
    """What a run that has just ended left: the metrics of its last validation (read from its
    own scalars, once: they go into the ``done`` marker), its checkpoint and that
    checkpoint's SHA-256. A cell already done has them from its marker."""
    if cell.state == 'done' and cell.result:
        return cell.result
    metrics = last_validation(cell.work_dir, cell.metrics)
    missing = [m.name for m in cell.metrics if m.name not in metrics]
    ckpt = finished_checkpoint(cell.work_dir)
    if ckpt is None:
        missing.append('checkpoint (last_checkpoint)')
    return dict(metrics={k: v for k, v in metrics.items() if k != 'step'},
                step=metrics.get('step'), missing=missing, checkpoint=ckpt,
                sha256=wd.sha256(ckpt) if ckpt else None)


def done_marker(result, **extra):
    """The fields of a ``done`` marker (:func:`write_marker`) for ``result``."""
    return dict(metrics=result['metrics'], step=result['step'], checkpoint=result['checkpoint'],
                sha256=result['sha256'], **extra)


def _diff(old, new):
    keys = sorted(set(old) | set(new))
    parts = []
    for k in keys:
        if old.get(k) != new.get(k):
            if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
                parts.append(_diff(old[k], new[k]))
            else:
                parts.append(f'{k}: was {old.get(k)!r}, now {new.get(k)!r}')
    return '; '.join(parts)
