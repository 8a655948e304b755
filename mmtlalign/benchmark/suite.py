"""Benchmark suites: mmengine config files under ``configs/benchmarks/`` naming arms and seeds.

A suite file holds (see ``configs/benchmarks/fmnist.py`` for a commented example)::

    seeds = [0, 1, 2]
    arms = [
        dict(name='cutmix', label='CutMix', config='configs/tlalign/deit-s_8xb128_cutmix.py',
             reference=dict(paper=79.8)),
        dict(name='tlalign', label='TL-Align', config='configs/tlalign/deit-s_8xb128.py',
             baseline='cutmix', cfg_options={'model.backbone.residual_weight': 0.5}),
    ]
    metrics = ['top-1']                 # what each cell reports (default: top-1)
    cfg_options = {}                    # applied to every training cell
    comparisons = [('tlalign', 'transmix')]  # extra paired comparisons besides the baselines
    downstream = [dict(name='ade20k', label='ADE20K', config='configs/tlalign/ade20k/...py',
                       metrics=['mIoU'])]  # each arm's checkpoint into these configs

    evaluation = [dict(kind='occlusion'), dict(kind='calibration', arms=['tlalign'])]

Config paths are relative to the working directory or, failing that, to the repository root.
The ``evaluation`` stages (:class:`EvalStage`; kinds and parameters of
:mod:`mmtlalign.evaluation.stages`) run on each finished training cell of the arms they name
(default every arm); they are checked here, so a typo fails before any training.
"""
import glob
import os.path as osp
from dataclasses import dataclass, field
from typing import Optional, Sequence

from mmengine.config import Config

from ..errors import UserInputError
from ..evaluation.stages import build_stage
from ..paths import config_path, project_root

SUITE_DIR = config_path('benchmarks')

#: metrics by name: the key mmengine logs for the last validation, and the factor to percent
METRICS = {
    'top-1': dict(key='accuracy/top1', scale=1.0),
    'top-5': dict(key='accuracy/top5', scale=1.0),
    'mIoU': dict(key='mIoU', scale=1.0),
    'box AP': dict(key='coco/bbox_mAP', scale=100.0),
    'mask AP': dict(key='coco/segm_mAP', scale=100.0),
}
#: where downstream configs take the ImageNet checkpoint (their backbone's init_cfg)
CHECKPOINT_KEY = 'model.backbone.init_cfg.checkpoint'


@dataclass
class Metric:
    """One number a cell reports: ``key`` in the run's scalars, shown as ``name``."""
    name: str
    key: str
    scale: float = 1.0
    stage: str = 'train'  # 'train' (the arm's run), a downstream task's or evaluation stage's name
    reference: dict = field(default_factory=dict)  # source -> value, the same for every arm


@dataclass
class Arm:
    name: str
    label: str
    config: str
    baseline: str = None
    cfg_options: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # source -> value of the first metric


@dataclass
class Downstream:
    """A downstream task: each arm × seed checkpoint fine-tuned with ``config`` (a cell of its
    own, after the training cell)."""
    name: str
    label: str
    config: str
    metrics: list
    checkpoint_key: str = CHECKPOINT_KEY
    cfg_options: dict = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    path: str
    arms: list
    seeds: list
    metrics: list  # of Metric, training stage first
    cfg_options: dict = field(default_factory=dict)
    comparisons: list = field(default_factory=list)  # (arm, reference arm) pairs
    downstream: list = field(default_factory=list)  # of Downstream
    evaluation: list = field(default_factory=list)  # of EvalStage, after training

    def arm(self, name):
        return next(a for a in self.arms if a.name == name)


@dataclass
class EvalStage:
    """One evaluation stage of a suite, run on a training cell's final checkpoint."""
    name: str
    kind: str
    spec: dict  # what tools/analysis/evaluate.py --spec takes
    label: str = ''
    arms: list = None  # None: every arm
    metrics: list = field(default_factory=list)  # of Metric


def resolve_path(path: str, what: str) -> str:
    """An existing file: as given (relative to the working directory), else under the repo."""
    for candidate in (path, osp.join(project_root(), path)):
        if osp.isfile(candidate):
            return osp.abspath(candidate)
    raise UserInputError(f'{what} {path!r} does not exist (paths are relative to the working '
                         f'directory or the repository root {project_root()}).')


def find_suite(name: str) -> str:
    """A suite file from a path or a bare name (``fmnist`` -> configs/benchmarks/fmnist.py)."""
    if osp.isfile(name):
        return osp.abspath(name)
    candidate = osp.join(SUITE_DIR, name if name.endswith('.py') else name + '.py')
    if osp.isfile(candidate):
        return candidate
    known = sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(SUITE_DIR,
                                                                                 '*.py')))
    raise UserInputError(f'benchmark suite {name!r} does not exist; give a suite file or one '
                         f'of configs/benchmarks/: {", ".join(known)}.')


def _metric(spec, stage, where):
    if isinstance(spec, str):
        if spec not in METRICS:
            raise UserInputError(f'{where}: unknown metric {spec!r}; use one of '
                                 f'{", ".join(METRICS)} or dict(name=..., key=..., scale=...).')
        return Metric(name=spec, stage=stage, **METRICS[spec])
    spec = dict(spec)
    if 'key' not in spec and spec.get('name') in METRICS:
        spec = {**METRICS[spec['name']], **spec}
    if 'key' not in spec:
        raise UserInputError(f'{where}: metric {spec} needs a `key` (the name mmengine logs, '
                             "e.g. 'accuracy/top1').")
    spec.setdefault('name', spec['key'])
    return Metric(stage=stage, **spec)


def _check_options(options, where):
    options = dict(options or {})
    for key, value in options.items():
        if isinstance(value, dict):
            raise UserInputError(f'{where}: cfg_options[{key!r}] is a dict; --cfg-options '
                                 'cannot carry dicts, spell it with dotted keys '
                                 f'({key}.SUBKEY=value) or put it in a config file.')
    return options


def _fields(obj, allowed, where):
    unknown = set(obj) - set(allowed)
    if unknown:
        raise UserInputError(f'{where}: unknown field(s) {", ".join(sorted(unknown))}; allowed: '
                             f'{", ".join(allowed)}.')


def parse_evaluation(entries, where, arm_names):
    """The suite's ``evaluation`` list as :class:`EvalStage` objects (checked now, so a typo
    fails before any training)."""
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
        metrics = [Metric(name=n, key=n, stage=stage.name) for n in stage.metric_names()]
        stages.append(EvalStage(name=stage.name, kind=stage.KIND, spec=stage.spec(),
                                label=label or stage.name, arms=arms, metrics=metrics))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UserInputError(f'{where}: evaluation stage names must be unique, got {names}; '
                             "give repeated kinds a name=... each.")
    return stages


def load_suite(path: str, arms: Optional[Sequence[str]] = None,
               seeds: Optional[Sequence[int]] = None) -> Suite:
    """Read and check a suite file.

    Args:
        path (str): a suite file or the name of one in ``configs/benchmarks/``.
        arms (list[str], optional): keep only these arms (``--arms``).
        seeds (list[int], optional): replace the suite's seeds (``--seeds``).

    Returns:
        Suite
    """
    path = find_suite(path)
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # noqa: BLE001  (mmengine raises many kinds for a broken file)
        raise UserInputError(f'cannot load suite {path!r}: {type(e).__name__}: {e}') from e
    where = osp.relpath(path)
    if not cfg.get('arms'):
        raise UserInputError(f'{where}: no `arms`; a suite needs arms = [dict(name=..., '
                             "config=...), ...].")
    suite_arms = []
    for i, a in enumerate(cfg.arms):
        a = dict(a)
        _fields(a, ('name', 'label', 'config', 'baseline', 'cfg_options', 'reference'),
                f'{where}: arms[{i}]')
        if 'name' not in a or 'config' not in a:
            raise UserInputError(f'{where}: arms[{i}] needs a `name` and a `config`.')
        a['config'] = resolve_path(a['config'], f'{where}: arm {a["name"]!r}: config')
        a.setdefault('label', a['name'])
        a['cfg_options'] = _check_options(a.get('cfg_options'), f'{where}: arm {a["name"]!r}')
        a['reference'] = dict(a.get('reference') or {})
        suite_arms.append(Arm(**a))
    names = [a.name for a in suite_arms]
    if len(set(names)) != len(names):
        raise UserInputError(f'{where}: arm names must be unique, got {names}.')
    for a in suite_arms:
        if a.baseline is not None and a.baseline not in names:
            raise UserInputError(f'{where}: arm {a.name!r} has baseline {a.baseline!r}, which is '
                                 f'not an arm ({", ".join(names)}).')
    comparisons = [(a.name, a.baseline) for a in suite_arms if a.baseline]
    for pair in cfg.get('comparisons', []):
        if len(pair) != 2 or not set(pair) <= set(names):
            raise UserInputError(f'{where}: comparison {pair} must name two arms of '
                                 f'{", ".join(names)}.')
        if tuple(pair) not in comparisons:
            comparisons.append(tuple(pair))

    if arms:
        unknown = [a for a in arms if a not in names]
        if unknown:
            raise UserInputError(f'--arms {" ".join(unknown)}: not in suite {where} (its arms: '
                                 f'{", ".join(names)}).')
        suite_arms = [a for a in suite_arms if a.name in arms]
        comparisons = [c for c in comparisons if set(c) <= set(arms)]
    seeds = list(seeds if seeds is not None else cfg.get('seeds', [0]))
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise UserInputError(f'seeds must be distinct integers, got {seeds}.')

    metrics = [_metric(m, 'train', where) for m in cfg.get('metrics', ['top-1'])]
    downstream = []
    for i, d in enumerate(cfg.get('downstream', [])):
        d = dict(d)
        _fields(d, ('name', 'label', 'config', 'metrics', 'checkpoint_key', 'cfg_options'),
                f'{where}: downstream[{i}]')
        if 'name' not in d or 'config' not in d or not d.get('metrics'):
            raise UserInputError(f'{where}: downstream[{i}] needs `name`, `config` and '
                                 '`metrics`.')
        d['config'] = resolve_path(d['config'], f'{where}: downstream {d["name"]!r}: config')
        d.setdefault('label', d['name'])
        d['metrics'] = [_metric(m, d['name'], where) for m in d['metrics']]
        d['cfg_options'] = _check_options(d.get('cfg_options'), f'{where}: downstream')
        downstream.append(Downstream(**d))
        metrics += d['metrics']
    evaluation = parse_evaluation(cfg.get('evaluation', []), where, names)
    metrics += [m for stage in evaluation for m in stage.metrics]
    return Suite(name=cfg.get('name', osp.splitext(osp.basename(path))[0]), path=path,
                 arms=suite_arms, seeds=seeds, metrics=metrics,
                 cfg_options=_check_options(cfg.get('cfg_options'), f'{where}: cfg_options'),
                 comparisons=comparisons, downstream=downstream, evaluation=evaluation)
