"""The ``label_fidelity`` stage: how close each label rule's share is to what the image shows.

On validation images whose foreground is known (``data_sample.fg_mask``: the garment's pixels of
the canvas suite, an object's boxes), image pairs are mixed by CutMix and the **content share**
(:func:`~mmtlalign.models.labels.content.content_share`: the fraction of the visible foreground
that comes from the partner) is compared with the partner share each label rule gives on the
same mixed images, with the same checkpoint (the rule objects called as the classifier calls
them, model in eval mode, no gradient). Every rule on one model: the comparison is paired within
the model, cheap, and far less noisy than accuracy.

Pairs and boxes are fixed: the images are taken in the test set's order in groups of
``group_size``; group ``g`` is shuffled and mixed by :class:`~mmtlalign.models.TLAlignMix`
(CutMix alpha ``cutmix_alpha``, one box per image on the ``box_grid``, by default the
backbone's patch size as in the released TL-Align CutMix, image ``i`` of the shuffled group
with image ``n - 1 - i``), all drawn from a generator seeded by ``(seed, g)``, so
every arm and seed of a suite sees the same pairs and boxes. Pairs without a real mix (an empty
box or one covering the whole image) or without visible foreground (the content share is
undefined there) are left out and counted.

Metrics (percentage points of the partner share for the errors):

- ``share MAE <rule>``: mean absolute difference of rule share and content share (lower
  is better);
- ``share r <rule>``: Pearson correlation of the rule share with the content share;
- ``share MAE <rule> vs <baseline>``: the rule's MAE minus the baseline rule's (area) on the
  same pairs of the same model (negative: closer to the content than the area label).

Curves: a subsample (``num_points``) of (rule share, content share) points for the scatter, the
mean shares, the rules that do not apply and why, and the counts of the pairs left out.

A config whose test pipeline packs no ``fg_mask`` is reported once and skipped
(:class:`ForegroundMissing`, like a missing robustness set).
"""
from contextlib import contextmanager

import numpy as np
import torch

from ..datasets.imagenet_robustness import RobustnessSetMissing
from ..errors import UserInputError
from ..models.labels import LABEL_RULES, build_label_rule
from ..models.labels.content import FG_MASK_HINT, content_share, stack_fg_masks
from ..models.mixing import TLAlignMix
from .base import Stage
from .evaluator import patch_size_of

#: short names of the rules in metric names and plots
RULE_LABELS = dict(AreaLabel='area', TransMixLabel='TransMix', TLAlignLabel='TL-Align',
                   PALLabel='PAL', SMMixLabel='SMMix', ContentLabel='content')

#: rules with nothing to say about a CutMix pair (their share there is another rule's)
NOT_ON_CUTMIX = {
    'PALLabel': 'PAL labels MaskMix batches only; on CutMix boxes it gives the area share',
    'SMMixLabel': "SMMix moves the partner's most attended square to the image's least "
                  'attended one; on CutMix boxes its class-token label is the area share',
    'ContentLabel': 'the reference itself',
}

DEFAULT_RULES = ('AreaLabel', 'TransMixLabel', 'TLAlignLabel', 'PALLabel', 'SMMixLabel')


class ForegroundMissing(RobustnessSetMissing):
    """The evaluated data carries no foreground masks: the stage is reported and skipped."""


def rule_label(name):
    return RULE_LABELS.get(name, name)


def has_fg_mask(cfg):
    """Whether the config's test pipeline packs ``fg_mask`` into the data samples."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    pipeline = (loader.get('dataset') or {}).get('pipeline') or []
    return any(str(t.get('type', '')).split('.')[-1] == 'PackInputs' and
               'fg_mask' in (t.get('algorithm_keys') or ()) for t in pipeline)


@contextmanager
def no_trace_sink(backbone):
    """The aligned backbones hand every traced pass to ``trace_sink`` (the classifier's drift
    log); the stage's passes must not pile up there."""
    sink = getattr(backbone, 'trace_sink', None)
    if sink is not None:
        backbone.trace_sink = None
    try:
        yield
    finally:
        if sink is not None:
            backbone.trace_sink = sink


def pearson(x, y):
    """Pearson correlation of two 1-D arrays; None when either is constant or too short."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


class LabelFidelity(Stage):
    KIND = 'label_fidelity'
    NEEDS_CONFIG = True
    PARAMS = dict(rules=DEFAULT_RULES, baseline='AreaLabel', num_images=None,
                  cutmix_alpha=1.0, box_grid=None, group_size=64, num_points=500)

    def __init__(self, name=None, **params):
        super().__init__(name, **params)
        p = self.params
        for rule in list(p['rules']) + [p['baseline']]:
            if rule not in LABEL_RULES.module_dict:
                raise UserInputError(f'{self.KIND} stage {self.name!r}: unknown label rule '
                                     f'{rule!r}; choose from '
                                     f'{sorted(LABEL_RULES.module_dict)}.')
        if p['baseline'] not in self.scored_rules():
            raise UserInputError(f'{self.KIND} stage {self.name!r}: baseline {p["baseline"]!r} '
                                 'must be one of its rules that apply to CutMix pairs.')
        if p['cutmix_alpha'] <= 0 or int(p['group_size']) < 2 or int(p['num_points']) < 0:
            raise UserInputError(f'{self.KIND} stage {self.name!r} needs cutmix_alpha > 0, '
                                 'group_size >= 2 and num_points >= 0.')

    def scored_rules(self):
        """The rules that give a share of their own on CutMix pairs."""
        return [r for r in self.params['rules'] if r not in NOT_ON_CUTMIX]

    def metric_names(self):
        base = rule_label(self.params['baseline'])
        names = []
        for rule in self.scored_rules():
            names += [f'share MAE {rule_label(rule)}', f'share r {rule_label(rule)}']
        names += [f'share MAE {rule_label(r)} vs {base}' for r in self.scored_rules()
                  if r != self.params['baseline']]
        return names

    def check(self, cfg=None):
        if cfg is not None and not has_fg_mask(cfg):
            raise ForegroundMissing(f'{self.KIND}: the test images carry no foreground mask '
                                    f'(data_sample.fg_mask); {FG_MASK_HINT}.')

    # -- running --
    def _rules(self, backbone):
        """({name: rule} that run on ``backbone``, {name: why not} for the others)."""
        rules, skipped = {}, {}
        for name in self.params['rules']:
            if name in NOT_ON_CUTMIX:
                skipped[name] = NOT_ON_CUTMIX[name]
                continue
            rule = build_label_rule(name)
            try:
                rule.check_backbone(backbone)
            except UserInputError as e:  # e.g. TransMix on a backbone without a class token
                skipped[name] = str(e)
                continue
            rules[name] = rule
        return rules, skipped

    def _groups(self, ev):
        """``(raw images (G, C, H, W), fg (G, H, W) bool, sample_idx (G,))`` per group of
        ``group_size`` images, in the test set's order (the last group may be smaller)."""
        size = int(self.params['group_size'])
        images, fgs, index = [], [], []
        for data in ev.loader(num_images=self.params['num_images']):
            inputs = data['inputs']
            batch = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
            samples = data['data_samples']
            try:
                fg = stack_fg_masks([s.get('fg_mask') for s in samples], batch.shape[-2:],
                                    f'the {self.KIND} stage')
            except UserInputError as e:
                if any(s.get('fg_mask') is None for s in samples):
                    raise ForegroundMissing(str(e)) from e
                raise
            images += list(batch)
            fgs += list(fg)
            index += [int(s.sample_idx) for s in samples]
            while len(images) >= size:
                yield (torch.stack(images[:size]), torch.stack(fgs[:size]),
                       torch.as_tensor(index[:size]))
                images, fgs, index = images[size:], fgs[size:], index[size:]
        if images:
            yield torch.stack(images), torch.stack(fgs), torch.as_tensor(index)

    def mix_group(self, ev, images, g):
        """The group's CutMix pairs: ``(MixedBatch, order)``; ``order`` (G,) is the shuffle
        that put image ``order[i]`` of the group at position ``i`` of the batch."""
        rng = np.random.default_rng([self.seed, g])
        order = torch.as_tensor(rng.permutation(len(images)))
        mixer = TLAlignMix(cutmix_alpha=float(self.params['cutmix_alpha']), mixup_alpha=0.0,
                           prob=1.0, mode='elem', pairing='flip',
                           box_grid=self.params['box_grid'])
        mixer._rng = rng  # one generator for the shuffle and the boxes: seeded by (seed, g)
        model = ev.model
        data = model.data_preprocessor(dict(inputs=images[order].to(ev.device),
                                            data_samples=None), False)
        patch = patch_size_of(model)
        return mixer(data['inputs'], (patch, patch)), order

    @torch.no_grad()
    def run(self, ev):
        model = ev.model.eval()
        rules, skipped = self._rules(model.backbone)
        names = list(rules)
        shares = {n: [] for n in names}
        content, area, visible, index = [], [], [], []
        n_images = n_unpaired = 0
        for g, (images, fg, idx) in enumerate(self._groups(ev)):
            n_images += len(images)
            if len(images) < 2:  # the last group's single image has no partner
                n_unpaired += len(images)
                continue
            mixed, order = self.mix_group(ev, images, g)
            fg = fg[order]
            content.append(content_share(fg, mixed.pixel_mask.cpu(), mixed.partner.cpu()))
            area.append(mixed.area_share.float().cpu())
            m = mixed.pixel_mask.cpu().double()
            seen = (m * fg[mixed.partner.cpu()]).sum((1, 2)) + ((1 - m) * fg).sum((1, 2))
            visible.append(seen > 0)
            index.append(idx[order])
            with no_trace_sink(model.backbone):
                for n in names:
                    shares[n].append(rules[n](model.backbone, mixed)[1].float().cpu())
        if not content:
            raise UserInputError(f'{self.KIND}: fewer than 2 test images, nothing to pair.')
        content, area = torch.cat(content).numpy(), torch.cat(area).numpy()
        visible, index = torch.cat(visible).numpy(), torch.cat(index).numpy()
        shares = {n: torch.cat(v).numpy() for n, v in shares.items()}
        real_mix = (area > 1e-6) & (area < 1 - 1e-6)
        keep = real_mix & visible
        metrics = self._metrics(shares, content, keep)
        return dict(metrics=metrics,
                    curves=self._curves(shares, content, area, index, keep, real_mix, visible,
                                        skipped, n_unpaired),
                    num_images=n_images)

    def _metrics(self, shares, content, keep):
        """{metric: value} over the kept pairs (None for a rule that did not run)."""
        out = {name: None for name in self.metric_names()}
        if not keep.any():
            return out
        mae = {n: 100.0 * float(np.abs(s[keep] - content[keep]).mean())
               for n, s in shares.items()}
        base = self.params['baseline']
        for n, s in shares.items():
            out[f'share MAE {rule_label(n)}'] = mae[n]
            out[f'share r {rule_label(n)}'] = pearson(s[keep], content[keep])
            if n != base and base in mae:
                out[f'share MAE {rule_label(n)} vs {rule_label(base)}'] = mae[n] - mae[base]
        return out

    def _curves(self, shares, content, area, index, keep, real_mix, visible, skipped,
                n_unpaired):
        kept = np.flatnonzero(keep)
        n = min(int(self.params['num_points']), len(kept))
        pick = np.sort(np.random.default_rng(self.seed).choice(kept, n, replace=False))

        def pts(a):
            return [round(float(v), 5) for v in a[pick]]
        points = dict(sample_idx=[int(i) for i in index[pick]], content=pts(content),
                      **{rule_label(r): pts(s) for r, s in shares.items()})
        mean = dict(content=float(content[keep].mean()) if len(kept) else None,
                    **{rule_label(r): float(s[keep].mean()) if len(kept) else None
                       for r, s in shares.items()})
        return dict(rules={rule_label(r): r for r in shares},
                    not_applicable={rule_label(r): why for r, why in skipped.items()},
                    baseline=rule_label(self.params['baseline']),
                    num_pairs=int(len(kept)), mean_share=mean, points=points,
                    excluded=dict(no_real_mix=int((~real_mix).sum()),
                                  nothing_visible=int((real_mix & ~visible).sum()),
                                  unpaired=int(n_unpaired)),
                    mean_area_share=float(area[keep].mean()) if len(kept) else None)
