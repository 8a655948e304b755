"""Cells of a suite (arm × seed, and each cell's downstream stages), their work dirs and state.

A cell's work dir is ``WORK/<arm>/seed<seed>`` (downstream: ``WORK/<arm>/seed<seed>-<stage>``)
and holds the run's own outputs (mmengine's timestamped log folders, checkpoints,
``last_checkpoint``) plus ``benchmark_cell.json``, written by the benchmark: the cell's
settings when it starts, and its metrics when it has finished. A rerun

- skips a cell whose marker says ``done`` with the same settings,
- resumes (``tools/train.py --resume``) a cell that has a checkpoint but did not finish,
- starts a cell from scratch otherwise,
- and refuses a work dir that was run with other settings (it would mix two experiments).
"""
import json
import os
import os.path as osp
from dataclasses import dataclass, field

from mmengine.runner import find_latest_checkpoint

from ..errors import UserInputError

MARKER = 'benchmark_cell.json'


@dataclass
class Cell:
    arm: str
    seed: int
    stage: str  # 'train', or the downstream stage's name
    config: str
    work_dir: str
    options: dict  # cfg-options of this cell, key -> value
    metrics: list  # of Metric
    parent: 'Cell' = None  # the training cell whose checkpoint a downstream cell starts from
    checkpoint_key: str = None
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
                    config=osp.relpath(self.config, _root()), options=_jsonable(options))


def _root():
    from .suite import ROOT
    return ROOT


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
                        metrics=[m for m in suite.metrics if m.stage == 'train'])
            cells.append(cell)
            for stage in suite.downstream:
                opts = {**stage.cfg_options, **(downstream_options or {}),
                        'randomness.seed': seed}
                cells.append(Cell(
                    arm=arm.name, seed=seed, stage=stage.name, config=stage.config,
                    work_dir=osp.join(work_root, arm.name, f'seed{seed}-{stage.name}'),
                    options=opts, metrics=stage.metrics, parent=cell,
                    checkpoint_key=stage.checkpoint_key))
    for cell in cells:
        cell.state = cell_state(cell)
    return cells


def read_marker(work_dir):
    path = osp.join(work_dir, MARKER)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_marker(cell, status, **extra):
    os.makedirs(cell.work_dir, exist_ok=True)
    data = dict(status=status, settings=cell.settings(), **extra)
    tmp = osp.join(cell.work_dir, MARKER + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(_jsonable(data), f, indent=2)
    os.replace(tmp, osp.join(cell.work_dir, MARKER))


def cell_state(cell):
    """'done', 'partial' (a checkpoint to resume from) or 'new'; refuses foreign work dirs."""
    marker = read_marker(cell.work_dir)
    if marker is not None and marker.get('settings') != cell.settings():
        raise UserInputError(
            f'{cell.work_dir} holds a run of {cell.name} with other settings '
            f'({_diff(marker.get("settings") or {}, cell.settings())}); pass another '
            '--work-dir, or delete that folder to run it again.')
    if marker is not None and marker.get('status') == 'done':
        return 'done'
    if osp.isdir(cell.work_dir) and find_latest_checkpoint(cell.work_dir):
        return 'partial'
    return 'new'


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
