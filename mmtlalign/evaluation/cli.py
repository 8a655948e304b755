"""``tools/analysis/evaluate.py``: evaluation stages on one trained checkpoint.

    python tools/analysis/evaluate.py CONFIG CHECKPOINT [--stages occlusion patch_shuffle
        corruption calibration imagenet_a ...] [--spec STAGES.json] [--work-dir DIR]
        [--cfg-options k=v ...] [--batch-size N] [--device cpu|cuda] [--force]

Each stage writes ``DIR/<stage>.json`` (status, settings, metrics, curves, wall time). A stage
whose file holds the same settings (stage spec, config, options, checkpoint size and time) is
skipped; ``--force`` runs it again. A robustness set whose data is missing is reported once and
recorded as ``missing`` (never scored).

The result files' format: :mod:`mmtlalign.evaluation.results`.
"""
import argparse
import json
import os.path as osp
import sys
import time

from mmengine.config import DictAction
from mmengine.registry import init_default_scope

from ..cli import launch
from ..datasets.imagenet_robustness import RobustnessSetMissing
from ..errors import UserInputError
from .evaluator import Evaluator
from .results import read_result, stage_settings, write_result
from .stages import KINDS, build_stage, run_stage


def load_specs(args):
    """Stage specs from ``--spec`` (a JSON list, or a file holding one) and ``--stages``."""
    specs = []
    if args.spec:
        text = args.spec
        if osp.isfile(text):
            with open(text) as f:
                text = f.read()
        try:
            specs += list(json.loads(text))
        except (json.JSONDecodeError, TypeError) as e:
            raise UserInputError(f'--spec: not a JSON list of stage dicts ({e}).') from e
    specs += [dict(kind=k) for k in args.stages or []]
    if not specs:
        raise UserInputError('no stage to run: give --stages KIND ... (e.g. occlusion '
                             'calibration) or --spec STAGES.json.')
    return specs


def evaluate(config, checkpoint, specs, work_dir, cfg_options=None, batch_size=None,
             device=None, force=False, echo=print, cache_dir=None):
    """Run every stage of ``specs`` on the checkpoint; returns ``{stage name: result}``."""
    if not osp.isfile(checkpoint):
        raise UserInputError(f'checkpoint {checkpoint!r} does not exist.')
    stages = [build_stage(s, 'evaluate.py') for s in specs]
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UserInputError(f'stage names must be unique, got {names}.')
    cfg = launch.load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ev, results = None, {}
    for stage in stages:
        settings = stage_settings(stage, config, checkpoint, cfg_options)
        old = read_result(work_dir, stage.name)
        if not force and old and old.get('status') == 'done' and old.get('settings') == settings:
            echo(f'{stage.name}: finished earlier, skipped')
            results[stage.name] = old
            continue
        try:
            stage.check(cfg)
        except RobustnessSetMissing as e:
            echo(f'{stage.name}: skipped, not scored -- {e}')
            results[stage.name] = dict(status='missing', reason=str(e), settings=settings)
            write_result(work_dir, stage.name, results[stage.name])
            continue
        if ev is None:
            ev = Evaluator(cfg, checkpoint, batch_size=batch_size, device=device,
                           cache_dir=cache_dir)
        echo(f'{stage.name}: running ...')
        out = run_stage(stage, ev)
        out.update(status='done', settings=settings,
                   created=time.strftime('%Y-%m-%d %H:%M:%S'))
        write_result(work_dir, stage.name, out)
        results[stage.name] = out
        shown = ', '.join(f'{k} {v:.2f}' for k, v in out['metrics'].items() if v is not None)
        echo(f'{stage.name}: {shown} ({out["num_images"]} images, {out["wall_s"]:.1f} s)')
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluation stages (robustness sets, occlusion, '
                                'patch shuffle, corruptions, calibration) on a checkpoint.')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--stages', nargs='+', choices=sorted(KINDS),
                   help='stage kinds to run with their default parameters')
    p.add_argument('--spec', help='JSON list of stage dicts (or a file holding one), e.g. '
                   '\'[{"kind": "occlusion", "fractions": [0.25, 0.5]}]\'')
    p.add_argument('--work-dir', help='where <stage>.json go (default: the checkpoint\'s '
                   'folder/evaluation)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='config overrides, key=value (e.g. test_dataloader.dataset.indices=500)')
    p.add_argument('--batch-size', type=int, help='evaluation batch size (default: the '
                   "config's test batch size)")
    p.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    p.add_argument('--force', action='store_true', help='run finished stages again')
    p.add_argument('--cache-dir', help='keep computed corruptions here, for other checkpoints '
                   'evaluated on the same images (the benchmark passes WORK/evaluation_cache)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        specs = load_specs(args)
        work_dir = args.work_dir or osp.join(osp.dirname(osp.abspath(args.checkpoint)),
                                             'evaluation')
        results = evaluate(args.config, args.checkpoint, specs, work_dir, args.cfg_options,
                           args.batch_size, args.device, args.force,
                           echo=lambda m: print(m, flush=True), cache_dir=args.cache_dir)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    print(f'results: {work_dir}/<stage>.json')
    return results
