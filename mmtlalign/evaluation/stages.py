"""Evaluation stages: what a benchmark suite lists under ``evaluation = [...]`` and
``tools/analysis/evaluate.py`` runs on a trained cell's checkpoint (no retraining).

A stage spec is a dict ``dict(kind=..., name=..., **params)``; ``name`` defaults to the kind.

===============  ========================================================  =====================
kind             what it measures                                          metrics (table)
===============  ========================================================  =====================
occlusion        top-1 with a fraction (``fractions``, default 0.1..0.9)   ``occlusion AUC``
                 of the patch tokens blanked (``patch_size``: default the
                 backbone's); the curve and the area under it, over the
                 fractions' range, as a mean top-1 (%)
patch_shuffle    top-1 with the image cut in ``g x g`` blocks and the      ``shuffle 2x2 top-1``,
                 blocks permuted (``grids``, default 2 and 4)              ``shuffle 4x4 top-1``
corruption       top-1 under the 15 ImageNet-C corruptions at severities   ``corruption error``
                 1-5 computed on the fly (``corruptions``,
                 ``severities``, ``num_images``); the mean top-1 error
                 over all of them
calibration      ECE (15 bins, torchmetrics) and NLL of the clean set,     ``ECE``, ``NLL``
                 and the reliability diagram
imagenet_v2      top-1 on ImageNet-V2 (``data_root``)                      ``ImageNet-V2 top-1``
imagenet_a       top-1 on ImageNet-A over its 200 classes' logits          ``ImageNet-A top-1``
imagenet_r       top-1 on ImageNet-R over its 200 classes' logits          ``ImageNet-R top-1``
imagenet_sketch  top-1 on ImageNet-Sketch                                  ``ImageNet-Sketch
                                                                           top-1``
imagenet_c       top-1 per corruption and severity on ImageNet-C; mean     ``ImageNet-C mCE``,
                 corruption error, normalised by AlexNet's and not         ``ImageNet-C mCE
                                                                           (unnorm.)``
label_fidelity   on CutMix pairs of test images with known foreground      ``share MAE <rule>``,
                 (``fg_mask``), each label rule's partner share against    ``share r <rule>``,
                 the content share (:mod:`.label_fidelity`)                ``share MAE <rule>
                                                                           vs area``
===============  ========================================================  =====================

Every stage uses a fixed ``seed`` (default 0) for its random draws; each image draws its own
(see :mod:`.perturbations`), so the arms and seeds of a suite see the same perturbed images.
"""
import time

import numpy as np
import torch

from ..datasets.imagenet_robustness import check_root
from ..errors import UserInputError
from . import perturbations as P
from .base import Stage
from .calibration import N_BINS, calibration
from .evaluator import correct, patch_size_of, top1
from .label_fidelity import LabelFidelity

#: AlexNet's top-1 error on ImageNet-C per corruption, averaged over the 5 severities: the
#: normaliser of the mCE. Source: Hendrycks & Dietterich, "Benchmarking Neural Network
#: Robustness to Common Corruptions and Perturbations", ICLR 2019; the numbers as published in
#: the authors' evaluation code (github.com/hendrycks/robustness, ImageNet-C/test.py) and
#: reused by AugMix (google-research/augmix, imagenet.py, ALEXNET_ERR).
ALEXNET_ERR = dict(
    gaussian_noise=0.886428, shot_noise=0.894468, impulse_noise=0.922640,
    defocus_blur=0.819880, glass_blur=0.826268, motion_blur=0.785948, zoom_blur=0.798360,
    snow=0.866816, frost=0.826572, fog=0.819324, brightness=0.564592, contrast=0.853204,
    elastic_transform=0.646056, pixelate=0.717840, jpeg_compression=0.606500)

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def trapezoid_mean(xs, ys):
    """Area under ``ys(xs)`` divided by the width of ``xs`` (a mean over the range)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return float(ys.mean())
    return float(np.trapz(ys, xs) / (xs[-1] - xs[0]))


class Occlusion(Stage):
    KIND = 'occlusion'
    PARAMS = dict(fractions=DEFAULT_FRACTIONS, patch_size=None, num_images=None)

    def metric_names(self):
        return ['occlusion AUC']

    def run(self, ev):
        n = self.params['num_images']
        patch = self.params['patch_size'] or patch_size_of(ev.model)
        clean = ev.predict(num_images=n)
        fill = None
        fractions = [float(f) for f in self.params['fractions']]
        if not fractions or not all(0 < f <= 1 for f in fractions):
            raise UserInputError(f'occlusion fractions must lie in (0, 1], got {fractions}.')
        accs = []
        for f in fractions:
            def perturb(images, idx, f=f):
                nonlocal fill
                fill = ev.fill_value(images.shape[1]) if fill is None else fill
                return P.occlude(images, f, patch, idx, fill, self.seed)
            out = ev.predict(perturb, num_images=n)
            accs.append(top1(out['logits'], out['labels']))
        return dict(metrics={'occlusion AUC': trapezoid_mean(fractions, accs)},
                    curves=dict(fraction=[0.0] + fractions,
                                top1=[top1(clean['logits'], clean['labels'])] + accs,
                                patch_size=patch),
                    num_images=len(clean['labels']))


class PatchShuffle(Stage):
    KIND = 'patch_shuffle'
    PARAMS = dict(grids=(2, 4), num_images=None)

    def metric_names(self):
        return [f'shuffle {g}x{g} top-1' for g in self.params['grids']]

    def run(self, ev):
        metrics, n_img = {}, 0
        for g in self.params['grids']:
            out = ev.predict(lambda images, idx, g=g: P.patch_shuffle(images, int(g), idx,
                                                                      self.seed),
                             num_images=self.params['num_images'])
            metrics[f'shuffle {g}x{g} top-1'] = top1(out['logits'], out['labels'])
            n_img = len(out['labels'])
        return dict(metrics=metrics, curves=dict(grid=list(self.params['grids']),
                                                 top1=list(metrics.values())),
                    num_images=n_img)


def corruption_summary(acc, alexnet=True):
    """Mean corruption errors from ``acc[corruption][severity]`` (top-1 %).

    Returns:
        dict: ``error`` (mean top-1 error over corruptions and severities, %), ``mce`` (mean
        over corruptions of sum_s E_{s,c} / sum_s E^{AlexNet}_{s,c}, %; None unless every
        corruption is one of ImageNet-C's 15 and has all 5 severities), ``per_severity``
        (mean error per severity, %).
    """
    errors = {c: {s: 100.0 - a for s, a in by_sev.items()} for c, by_sev in acc.items()}
    flat = [e for by_sev in errors.values() for e in by_sev.values()]
    severities = sorted({s for by_sev in errors.values() for s in by_sev})
    per_sev = [float(np.mean([errors[c][s] for c in errors if s in errors[c]]))
               for s in severities]
    mce = None
    if alexnet and errors and all(c in ALEXNET_ERR and sorted(by_sev) == list(P.SEVERITIES)
                                  for c, by_sev in errors.items()):
        ce = [np.mean(list(by_sev.values())) / (100.0 * ALEXNET_ERR[c])
              for c, by_sev in errors.items()]
        mce = float(np.mean(ce)) * 100.0
    return dict(error=float(np.mean(flat)), mce=mce, severity=severities,
                per_severity=per_sev)


class Corruption(Stage):
    KIND = 'corruption'
    PARAMS = dict(corruptions=P.CORRUPTIONS, severities=P.SEVERITIES, num_images=None)

    def metric_names(self):
        return ['corruption error']

    def run(self, ev):
        acc = {}
        n_img = 0
        for name in self.params['corruptions']:
            acc[name] = {}
            for s in self.params['severities']:
                out = ev.predict(lambda images, idx, name=name, s=s: P.corrupt_cached(
                    images, name, int(s), idx, self.seed, ev.cache_dir),
                    num_images=self.params['num_images'])
                acc[name][int(s)] = top1(out['logits'], out['labels'])
                n_img = len(out['labels'])
        summary = corruption_summary(acc, alexnet=False)
        return dict(metrics={'corruption error': summary['error']},
                    curves=dict(severity=summary['severity'], error=summary['per_severity'],
                                top1={c: [acc[c][s] for s in sorted(acc[c])] for c in acc}),
                    num_images=n_img)


class Calibration(Stage):
    KIND = 'calibration'
    PARAMS = dict(n_bins=N_BINS, num_images=None)

    def metric_names(self):
        return ['ECE', 'NLL']

    def run(self, ev):
        out = ev.predict(num_images=self.params['num_images'])
        cal = calibration(out['logits'], out['labels'], int(self.params['n_bins']))
        return dict(metrics={'ECE': cal['ece'], 'NLL': cal['nll']},
                    curves=dict(bins=cal['bins'], top1=cal['top1']),
                    num_images=len(out['labels']))


class RobustnessSet(Stage):
    """Top-1 on one of the ImageNet robustness datasets (``DATASET``, registered in
    mmpretrain's ``DATASETS``), through the config's test pipeline."""
    DATASET = ''
    LABEL = ''
    PARAMS = dict(data_root=None, num_images=None)

    def metric_names(self):
        return [f'{self.LABEL} top-1']

    def dataset(self):
        return dict(type=self.DATASET, data_root=self.params['data_root'])

    def check(self, cfg=None):
        check_root(self.LABEL, self.params['data_root'],
                   f' (stage {self.name!r}: its data_root in the suite; the ImageNet suites '
                   'read IMAGENET_{V2,A,R,SKETCH,C}_ROOT)')

    def build_dataset(self, ev):
        from mmengine.registry import build_from_cfg
        from mmpretrain.registry import DATASETS
        return build_from_cfg(ev.dataset_config(self.dataset()), DATASETS)

    def _subset(self, ev, dataset):
        subset = getattr(dataset, 'subset_indices', None)
        if subset is not None and ev.num_classes != 1000:
            raise UserInputError(f'{self.LABEL} is scored over ImageNet-1k logits; this model '
                                 f'has {ev.num_classes} classes.')
        return subset

    def run(self, ev):
        self.check()
        dataset = self.build_dataset(ev)
        subset = self._subset(ev, dataset)
        out = ev.predict(dataset=self.dataset(), num_images=self.params['num_images'])
        metrics = {f'{self.LABEL} top-1': top1(out['logits'], out['labels'], subset)}
        curves = {}
        if subset is not None:  # for the record: what scoring over all 1000 logits would give
            curves['top1_over_1000_logits'] = top1(out['logits'], out['labels'])
            curves['num_classes_scored'] = len(subset)
        return dict(metrics=metrics, curves=curves, num_images=len(out['labels']))


class ImageNetV2Stage(RobustnessSet):
    KIND, DATASET, LABEL = 'imagenet_v2', 'ImageNetV2', 'ImageNet-V2'


class ImageNetAStage(RobustnessSet):
    KIND, DATASET, LABEL = 'imagenet_a', 'ImageNetA', 'ImageNet-A'


class ImageNetRStage(RobustnessSet):
    KIND, DATASET, LABEL = 'imagenet_r', 'ImageNetR', 'ImageNet-R'


class ImageNetSketchStage(RobustnessSet):
    KIND, DATASET, LABEL = 'imagenet_sketch', 'ImageNetSketch', 'ImageNet-Sketch'


class ImageNetCStage(RobustnessSet):
    KIND, DATASET, LABEL = 'imagenet_c', 'ImageNetC', 'ImageNet-C'
    PARAMS = dict(data_root=None, corruptions=None, severities=None, num_images=None)

    def metric_names(self):
        return ['ImageNet-C mCE', 'ImageNet-C mCE (unnorm.)']

    def dataset(self):
        return dict(type=self.DATASET, data_root=self.params['data_root'],
                    corruptions=self.params['corruptions'], severities=self.params['severities'])

    def run(self, ev):
        self.check()
        dataset = self.build_dataset(ev)
        groups = dataset.groups()
        out = ev.predict(dataset=self.dataset(), num_images=self.params['num_images'])
        right = correct(out['logits'], out['labels'])
        hits = {}
        for ok, i in zip(right.tolist(), out['sample_idx'].tolist()):
            hits.setdefault(groups[i], []).append(ok)
        acc = {}
        for (c, s), oks in sorted(hits.items()):
            acc.setdefault(c, {})[s] = 100.0 * sum(oks) / len(oks)
        summary = corruption_summary(acc)
        return dict(metrics={'ImageNet-C mCE': summary['mce'],
                             'ImageNet-C mCE (unnorm.)': summary['error']},
                    curves=dict(severity=summary['severity'], error=summary['per_severity'],
                                top1={c: [acc[c][s] for s in sorted(acc[c])] for c in acc},
                                mce_note=None if summary['mce'] is not None else
                                'mCE needs all 15 corruptions x 5 severities'),
                    num_images=len(out['labels']))


KINDS = {cls.KIND: cls for cls in (Occlusion, PatchShuffle, Corruption, Calibration,
                                   ImageNetV2Stage, ImageNetAStage, ImageNetRStage,
                                   ImageNetSketchStage, ImageNetCStage, LabelFidelity)}


def build_stage(spec, where='evaluation'):
    """A :class:`Stage` from a spec dict (or a bare kind name)."""
    spec = dict(kind=spec) if isinstance(spec, str) else dict(spec)
    kind = spec.pop('kind', None) or spec.get('name')
    if kind not in KINDS:
        raise UserInputError(f'{where}: unknown evaluation stage kind {kind!r}; use one of '
                             f'{", ".join(KINDS)}.')
    return KINDS[kind](**spec)


def run_stage(stage, ev):
    """Run ``stage`` on ``ev``; the result dict with the stage's spec and its wall time."""
    start = time.time()
    torch.manual_seed(stage.seed)
    out = stage.run(ev)
    out.update(stage=stage.name, kind=stage.KIND, spec=stage.spec(),
               wall_s=time.time() - start)
    return out
