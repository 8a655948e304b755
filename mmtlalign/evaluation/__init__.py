"""Evaluation stages run on a trained checkpoint (no retraining): ImageNet robustness sets
(V2, A, R, Sketch, C), computed perturbations of the validation set (occlusion, patch shuffle,
ImageNet-C corruptions), calibration (ECE, NLL, reliability diagram).

``tools/analysis/evaluate.py`` runs them on one checkpoint; a benchmark suite lists them under
``evaluation = [...]`` and the runner evaluates every finished cell
(:mod:`mmtlalign.benchmark.evaluations`).
"""
from .calibration import calibration, reliability_bins
from .evaluator import Evaluator, build_classifier, top1
from .stages import ALEXNET_ERR, KINDS, Stage, build_stage, corruption_summary, run_stage

__all__ = ['ALEXNET_ERR', 'Evaluator', 'KINDS', 'Stage', 'build_classifier', 'build_stage',
           'calibration', 'corruption_summary', 'reliability_bins', 'run_stage', 'top1']
