"""Cost of TL-Align: training-step time and memory against the upstream baseline, in one run.

Variants (same backbone weights, same batch; the list is :data:`VARIANTS`):
  a      upstream: mmpretrain ImageClassifier + mmpretrain's CutMix batch augment
  b      ours:     TLAlignClassifier + AlignedVisionTransformer / AlignedSwinTransformer
                   (one share per token; the device's default attention path)
  c      K-dim:    the released code's form, ViT only: explicit softmax attention in every
                   block and (B, N, K) label vectors propagated with it
  b-sep  ours with the attention path CUDA runs by default (the plain call + a gradient-free
         share call), forced on any device (ViT; not run unless named in --variants)
  b-flash  ours with the experimental opt-in 'cuda_flash' path (CUDA + --amp; ViT; not run
         unless named in --variants)
  tmix   TransMix labels (TLAlignClassifier, align='TransMixLabel'): the class token's
         attention rides along in the last block's fused call only (ViT)
  area   TLAlignClassifier with area labels: our mixer, no tracing (not run unless named)
  a-comp, b-comp  a and b with compile=True as CompileRunner applies it (torch.compile of
         backbone, head and label rule; optimizer step eager; not run unless named)
  tok    TL-Align + dense token labels (token_loss: every output token classified by the
         shared head against its traced share, weight 0.5); ViT and Swin
  tok-sep  the same with a separate linear token head (not run unless named)
  tok-org  TL-Align + token labels from each token's starting share (not run unless named)
  mixpro, maskmix, smmix, tokenmix, tlalign-maskmix, tlalign-tokenmix  the peer arms of
         configs/benchmarks/ (MaskMix / block masks / SMMix with their label rules; MixPro and
         SMMix ViT only; not run unless named)
  b-nodrift  b without the label-drift logging (log_drift=False; b logs the drift after every
         block from the traced pass): the cost of that logging is b / b-nodrift, printed
         (not run unless named)

A step is data preprocessing (mixing) + forward + loss + backward + AdamW step. Repetitions are
interleaved (a, b, c, a, b, c, ...) and medians compared, since machines here are noisy; on
a CPU shared with other work the process CPU time is the steadier of the two clocks.
Memory is the bytes autograd saves for backward during the step (unique storages; exact and
repeatable on CPU), plus on a GPU the step's CUDA peak above what was allocated before it.
``--amp`` runs the step under autocast (fp16 with a loss scaler, or ``--amp-dtype bfloat16``).

    python tools/analysis/benchmark_alignment.py --model deit-s --batch 32 --reps 10
    python tools/analysis/benchmark_alignment.py --model swin-t --batch 16
    python tools/analysis/benchmark_alignment.py --model deit-s --device cuda --amp --batch 128
    python tools/analysis/benchmark_alignment.py --model deit-s --variants a,b,b-sep
    python tools/analysis/benchmark_alignment.py --model swin-t --batch 8 --variants a,b,tok
    python tools/analysis/benchmark_alignment.py --model deit-s --batch 16 --variants \
        a,b,tmix,mixpro,maskmix,smmix,tokenmix,tlalign-maskmix,tlalign-tokenmix
"""
import argparse
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import mmtlalign  # noqa: F401
from mmtlalign.models import alignment
from mmtlalign.models.vit import AlignedVisionTransformer, ShareTracer

MODELS = {
    'deit-t': dict(backbone=dict(type='VisionTransformer', arch='deit-tiny', img_size=224,
                                 patch_size=16),
                   head=dict(type='VisionTransformerClsHead', in_channels=192)),
    'deit-s': dict(backbone=dict(type='VisionTransformer', arch='deit-small', img_size=224,
                                 patch_size=16),
                   head=dict(type='VisionTransformerClsHead', in_channels=384)),
    'swin-t': dict(backbone=dict(type='SwinTransformer', arch='tiny', img_size=224,
                                 drop_path_rate=0.2),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', in_channels=768)),
}
ALIGNED = {'VisionTransformer': 'AlignedVisionTransformer',
           'SwinTransformer': 'AlignedSwinTransformer'}


class KDimTracer(ShareTracer):
    """The released code's rule: explicit attention, (B, N, K) labels."""

    def attention(self, q, k, v, dropout_p=0.):
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1]**-0.5, dim=-1)
        labels = self.share
        self.share = 0.5 * (attn.detach().mean(dim=1) @ labels) + 0.5 * labels
        self.history.append(self.share)
        return F.dropout(attn, dropout_p, self.training) @ v


class KDimVisionTransformer(AlignedVisionTransformer):
    """ViT whose forward_aligned traces full label vectors with explicit attention."""

    def forward_aligned(self, x, token_share, labels=None, partner=None, num_classes=1000):
        y_a = F.one_hot(labels, num_classes).float()
        y_b = y_a[partner]
        s = alignment.initial_share(token_share, self.num_extra_tokens)[..., None]
        tracer = KDimTracer((1 - s) * y_a[:, None] + s * y_b[:, None], self.residual_weight)
        tracer.training = self.training
        with self._attention_replaced_by(tracer):
            outs = self.forward(x)
        return outs, tracer.share[:, 0]  # (B, K) target of the class token


def classifier_cfg(model_name, num_classes, aligned):
    """Config of the upstream classifier (``aligned=False``) or of TL-Align's."""
    spec = MODELS[model_name]
    cfg = dict(type='ImageClassifier', backbone=dict(spec['backbone']),
               neck=spec.get('neck'), head=dict(spec['head'], num_classes=num_classes,
                                                loss=dict(type='LabelSmoothLoss',
                                                          label_smooth_val=0.1)))
    if not aligned:
        cfg['train_cfg'] = dict(augments=[dict(type='CutMix', alpha=1.0)])
        cfg['data_preprocessor'] = dict(num_classes=num_classes)
        return cfg
    cfg.update(type='TLAlignClassifier', mix=dict(type='TLAlignMix', cutmix_alpha=1.0, seed=0))
    cfg['backbone']['type'] = ALIGNED[cfg['backbone']['type']]
    return cfg


def build_upstream(model_name, num_classes):
    from mmpretrain.registry import MODELS as REG
    return REG.build(classifier_cfg(model_name, num_classes, aligned=False))


def build_aligned(model_name, num_classes):
    from mmpretrain.registry import MODELS as REG
    return REG.build(classifier_cfg(model_name, num_classes, aligned=True))


def build_with_labels(align):
    """Builder of TL-Align's classifier with another label rule (its ``model.align``)."""

    def build(model_name, num_classes):
        from mmpretrain.registry import MODELS as REG
        return REG.build(dict(classifier_cfg(model_name, num_classes, aligned=True), align=align))

    return build


def build_peer(mix, align):
    """Builder of TL-Align's classifier with another mixer and label rule (the peer arms of
    docs/en/user_guides/peers.md: MaskMix, TokenMix's block mask, SMMix)."""

    def build(model_name, num_classes):
        from mmpretrain.registry import MODELS as REG
        return REG.build(dict(classifier_cfg(model_name, num_classes, aligned=True),
                              mix=dict(mix, seed=0), align=align))

    return build


#: the peers' mixers at 224 px (cells of MixPro's 56 px; TokenMix's 14 x 14 cells of 16 px)
MASKMIX = dict(type='MaskMix', alpha=1.0, cell_size=56)
BLOCK = dict(type='BlockMaskMix', mask_ratio=0.5, min_tokens=14, cell_size=16)
SMMIX = dict(type='SMMix')


def build_with_token_loss(**token_loss):
    """Builder of TL-Align's classifier with dense token labels (its ``model.token_loss``)."""

    def build(model_name, num_classes):
        from mmpretrain.registry import MODELS as REG
        return REG.build(dict(classifier_cfg(model_name, num_classes, aligned=True),
                              token_loss=token_loss))

    return build


def build_without_drift(model_name, num_classes):
    """TL-Align's classifier without the per-block label-drift logging (``log_drift=False``)."""
    from mmpretrain.registry import MODELS as REG
    return REG.build(dict(classifier_cfg(model_name, num_classes, aligned=True),
                          log_drift=False))


def compiled(build):
    """Builder of the same model with ``compile=True`` as ``CompileRunner`` applies it
    (backbone, neck, head and the label rule's forward compiled; optimizer step eager)."""

    def build_compiled(model_name, num_classes):
        from mmtlalign.engine.compile import compile_model
        model = build(model_name, num_classes)
        compile_model(model)
        return model

    return build_compiled


def build_kdim(model_name, num_classes):
    model = build_aligned(model_name, num_classes)
    model.backbone.__class__ = KDimVisionTransformer
    model.loss = kdim_loss.__get__(model)
    return model


@dataclass
class Variant:
    """One arm of the benchmark.

    Attributes:
        label (str): the name printed in the table.
        build (callable): ``build(model_name, num_classes) -> classifier``.
        context (callable): ``context() -> context manager`` entered around every step of
            this variant (e.g. a choice of attention implementation).
        models (tuple[str] | None): the models it applies to; None: all.
        default (bool): run when ``--variants`` is not given.
    """
    label: str
    build: Callable
    context: Callable = nullcontext
    models: Optional[tuple] = None
    default: bool = True


#: The arms, by name; ``a`` is the reference every ratio is taken against. To add one, add an
#: entry here (a build function, and a context if it only switches an implementation).
VARIANTS = {
    'a': Variant('upstream mmpretrain + CutMix', build_upstream),
    'b': Variant('TL-Align (ours, share form)', build_aligned),
    'c': Variant('TL-Align K-dim, explicit attn', build_kdim, models=('deit-t', 'deit-s')),
    # the attention path that CUDA runs (plain call + gradient-free share call), on any device
    'b-sep': Variant('TL-Align, separate share call', build_aligned,
                     context=lambda: alignment.share_attention_impl('separate'),
                     models=('deit-t', 'deit-s'), default=False),
    # experimental opt-in (CUDA, fp16/bf16 under --amp): the share rides in the flash call
    'b-flash': Variant('TL-Align, share in CUDA flash call', build_aligned,
                       context=lambda: alignment.share_attention_impl('cuda_flash'),
                       models=('deit-t', 'deit-s'), default=False),
    # the other label rules of TLAlignClassifier (mmtlalign.models.labels), same mixer
    'tmix': Variant('TransMix (ours, share channels)', build_with_labels('TransMixLabel'),
                    models=('deit-t', 'deit-s')),
    'area': Variant('CutMix, area labels (ours)', build_with_labels(False), default=False),
    # compile=True (torch.compile, inductor): the first steps compile, the timed ones do not
    'a-comp': Variant('upstream + CutMix, compiled', compiled(build_upstream), default=False),
    'b-comp': Variant('TL-Align, compiled', compiled(build_aligned), default=False),
    # dense token labels (TLAlignClassifier(token_loss=...)), from the same traced pass
    'tok': Variant('TL-Align + token labels', build_with_token_loss(weight=0.5)),
    'tok-sep': Variant('TL-Align + token labels, own head',
                       build_with_token_loss(weight=0.5, head='separate'), default=False),
    'tok-org': Variant('TL-Align + origin token labels',
                       build_with_token_loss(weight=0.5, labels='origin'), default=False),
    # b's label-drift logging (drift/block_XX scalars) switched off: its cost is b / b-nodrift
    'b-nodrift': Variant('TL-Align, no drift logging', build_without_drift, default=False),
    # the peers, arm names as in configs/benchmarks/ (not run unless named): their mixers
    # every step (SMMix: + its no-grad motivation pass, token head and two losses)
    'mixpro': Variant('MixPro (MaskMix + PAL)', build_peer(MASKMIX, 'PALLabel'),
                      models=('deit-t', 'deit-s'), default=False),
    'maskmix': Variant('MaskMix, area labels', build_peer(MASKMIX, False), default=False),
    'smmix': Variant('SMMix (+ no-grad pass, 2 losses)', build_peer(SMMIX, 'SMMixLabel'),
                     models=('deit-t', 'deit-s'), default=False),
    'tokenmix': Variant('TokenMix block mask, area', build_peer(BLOCK, False), default=False),
    'tlalign-maskmix': Variant('TL-Align on MaskMix', build_peer(MASKMIX, True),
                               default=False),
    'tlalign-tokenmix': Variant('TL-Align on TokenMix masks', build_peer(BLOCK, True),
                                default=False),
}


def select_variants(arg, model_name):
    """``--variants``: comma-separated names (``a,b,b-sep``) or single letters (``abc``);
    default: the default variants that apply to the model. ``a`` always comes first."""
    if arg is None:
        names = [n for n, v in VARIANTS.items() if v.default]
    elif ',' in arg or arg in VARIANTS:
        names = [n.strip() for n in arg.split(',') if n.strip()]
    else:
        names = list(arg)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f'error: unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}.')
    applies = [n for n in names
               if VARIANTS[n].models is None or model_name in VARIANTS[n].models]
    if arg is not None and applies != names:
        bad = sorted(set(names) - set(applies))
        raise SystemExit(f'error: variant(s) {bad} do not apply to {model_name}.')
    return ['a'] + [n for n in applies if n != 'a']


def kdim_loss(self, inputs, data_samples):
    labels = torch.cat([s.gt_label for s in data_samples])
    mixed = self.mixer(inputs, self.patch_size)
    feats, target = self.backbone.forward_aligned(mixed.inputs, mixed.token_share, labels,
                                                  mixed.partner, self.num_classes)
    for sample, score in zip(data_samples, target):
        sample.set_gt_score(score)
    return self.head.loss(feats, data_samples)


def make_batch(batch, num_classes, device):
    from mmpretrain.structures import DataSample
    imgs = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    return dict(inputs=list(imgs.to(device)),
                data_samples=[DataSample().set_gt_label(i % num_classes) for i in range(batch)])


class Arm:
    """A built variant: model, optimizer, and the AMP set-up of the run."""

    def __init__(self, name, model, device, amp_dtype=None, lr=1e-4):
        self.name, self.variant, self.model = name, VARIANTS[name], model
        self.optim = torch.optim.AdamW(model.parameters(), lr=lr)
        self.device, self.amp_dtype = device, amp_dtype
        # fp16 needs loss scaling (what mmengine's AmpOptimWrapper does); bf16 does not
        self.scaler = (torch.amp.GradScaler(device.type)
                       if amp_dtype == torch.float16 and device.type == 'cuda' else None)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def train_step(arm, data):
    """Preprocess (mixing) + forward + loss + backward + AdamW step, as mmengine runs it
    (``parse_losses`` included: it sums the ``loss`` keys and reads every logged value)."""
    model, optim = arm.model, arm.optim
    data = model.data_preprocessor(dict(data, data_samples=[s.clone() for s in
                                                             data['data_samples']]), True)
    with arm.variant.context(), arm.autocast():
        losses = model(**data, mode='loss')
        loss, log_vars = model.parse_losses(losses)
        for value in log_vars.values():  # mmengine's message hub reads every logged value
            value.item()
    optim.zero_grad(set_to_none=True)
    if arm.scaler is None:
        loss.backward()
        optim.step()
    else:
        arm.scaler.scale(loss).backward()
        arm.scaler.step(optim)
        arm.scaler.update()


def saved_bytes(arm, data):
    """Bytes of the unique storages autograd saves during one step."""
    seen = {}

    def pack(t):
        if t.device.type != 'meta':
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(arm, data)
    return sum(seen.values())


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='deit-s', choices=sorted(MODELS))
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--reps', type=int, default=8)
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--variants', default=None,
                        help=f'comma-separated, from {sorted(VARIANTS)}, or letters ("ab"); '
                        'default: abc for DeiT, ab for Swin')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (autocast; fp16 with a loss scaler on CUDA)')
    parser.add_argument('--amp-dtype', default='float16', choices=['float16', 'bfloat16'])
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    names = select_variants(args.variants, args.model)
    amp_dtype = getattr(torch, args.amp_dtype) if args.amp else None

    torch.manual_seed(0)
    arms = {}
    for name in names:
        model = VARIANTS[name].build(args.model, args.num_classes).to(device)
        if arms:  # same weights everywhere (a separate token head is the only extra)
            model.load_state_dict(arms['a'].model.state_dict(),
                                  strict=not hasattr(model, 'token_head'))
        model.train()
        arms[name] = Arm(name, model, device, amp_dtype)
    data = make_batch(args.batch, args.num_classes, device)

    memory = {v: saved_bytes(arms[v], data) for v in names}  # also warms up
    peak = {}
    times = {v: [] for v in names}
    cpu_times = {v: [] for v in names}
    print(f'{args.model}, batch {args.batch}, {device}, {torch.get_num_threads()} threads, '
          f'amp {args.amp_dtype if args.amp else "off"}, {args.reps} interleaved repetitions')
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for v in order:
            sync(device)
            if device.type == 'cuda':
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(arms[v], data)
            sync(device)
            times[v].append(time.perf_counter() - t0)
            cpu_times[v].append(time.process_time() - c0)
            if device.type == 'cuda':  # the step's own peak, above what was held before it
                peak[v] = max(peak.get(v, 0), torch.cuda.max_memory_allocated() - before)
        print(f'  rep {rep + 1}/{args.reps}: ' +
              '  '.join(f'{v} {times[v][-1] * 1e3:.0f} ms' for v in names), flush=True)
    report(names, times, cpu_times, memory, peak)


def report(names, times, cpu_times, memory, peak):
    med = {v: statistics.median(t) for v, t in times.items()}
    cpu = {v: statistics.median(t) for v, t in cpu_times.items()}
    print(f'\n{"variant":38s} {"step ms":>9s} {"x a":>7s} {"CPU ms":>9s} {"x a":>7s} '
          f'{"saved MiB":>10s} {"x a":>7s}' +
          (f' {"CUDA peak MiB":>14s} {"x a":>7s}' if peak else ''))
    for v in names:
        row = (f'{v:6s} {VARIANTS[v].label:31s} {med[v] * 1e3:9.1f} {med[v] / med["a"]:7.3f} '
               f'{cpu[v] * 1e3:9.1f} {cpu[v] / cpu["a"]:7.3f} '
               f'{memory[v] / 2**20:10.1f} {memory[v] / memory["a"]:7.3f}')
        if peak:
            row += f' {peak[v] / 2**20:14.1f} {peak[v] / peak["a"]:7.3f}'
        print(row)
    for v in names[1:]:
        line = (f'ratio {v}/a: wall time {med[v] / med["a"]:.3f}, CPU time '
                f'{cpu[v] / cpu["a"]:.3f}, saved memory {memory[v] / memory["a"]:.3f}')
        if peak:
            line += f', peak memory {peak[v] / peak["a"]:.3f}'
        print(line)
    if 'b' in names and 'b-nodrift' in names:
        print(f'drift logging (b / b-nodrift): wall time {med["b"] / med["b-nodrift"]:.3f}, '
              f'CPU time {cpu["b"] / cpu["b-nodrift"]:.3f}, saved memory '
              f'{memory["b"] / memory["b-nodrift"]:.3f}')


if __name__ == '__main__':
    main()
