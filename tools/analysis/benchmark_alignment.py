"""Cost of TL-Align: training-step time and memory against the upstream baseline, in one run.

Variants (same backbone weights, same batch):
  a  upstream: mmpretrain ImageClassifier + mmpretrain's CutMix batch augment
  b  ours:     TLAlignClassifier + AlignedVisionTransformer / AlignedSwinTransformer
               (one share per token, carried through the fused attention call)
  c  K-dim:    the released code's form, ViT only: explicit softmax attention in every block
               and (B, N, K) label vectors propagated with it

A step is data preprocessing (mixing) + forward + loss + backward + AdamW step. Repetitions are
interleaved (a, b, c, a, b, c, ...) and medians compared, since machines here are noisy; on
a CPU shared with other work the process CPU time is the steadier of the two clocks.
Memory is the bytes autograd saves for backward during the step (unique storages; exact and
repeatable on CPU), plus the CUDA peak on a GPU.

    python tools/analysis/benchmark_alignment.py --model deit-s --batch 32 --reps 10
    python tools/analysis/benchmark_alignment.py --model swin-t --batch 16
"""
import argparse
import statistics
import time

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


def build(model_name, variant, num_classes):
    from mmpretrain.registry import MODELS as REG
    spec = MODELS[model_name]
    cfg = dict(type='ImageClassifier', backbone=dict(spec['backbone']),
               neck=spec.get('neck'), head=dict(spec['head'], num_classes=num_classes,
                                                loss=dict(type='LabelSmoothLoss',
                                                          label_smooth_val=0.1)))
    if variant == 'a':
        cfg['train_cfg'] = dict(augments=[dict(type='CutMix', alpha=1.0)])
        cfg['data_preprocessor'] = dict(num_classes=num_classes)
        return REG.build(cfg)
    cfg.update(type='TLAlignClassifier', mix=dict(type='TLAlignMix', cutmix_alpha=1.0, seed=0))
    cfg['backbone']['type'] = ALIGNED[cfg['backbone']['type']]
    model = REG.build(cfg)
    if variant == 'c':
        model.backbone.__class__ = KDimVisionTransformer
        model.loss = kdim_loss.__get__(model)
    return model


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


def train_step(model, optim, data):
    data = model.data_preprocessor(dict(data, data_samples=[s.clone() for s in
                                                             data['data_samples']]), True)
    losses = model(**data, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()


def saved_bytes(model, optim, data):
    """Bytes of the unique storages autograd saves during one step."""
    seen = {}

    def pack(t):
        if t.device.type != 'meta':
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, optim, data)
    return sum(seen.values())


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='deit-s', choices=sorted(MODELS))
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--reps', type=int, default=8)
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--variants', default=None, help='e.g. "ab"; default abc (ab for Swin)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = args.variants or ('abc' if args.model.startswith('deit') else 'ab')

    torch.manual_seed(0)
    models = {v: build(args.model, v, args.num_classes).to(device) for v in variants}
    state = models['a'].state_dict()
    for m in models.values():
        m.load_state_dict(state)  # same weights everywhere
        m.train()
    optims = {v: torch.optim.AdamW(m.parameters(), lr=1e-4) for v, m in models.items()}
    data = make_batch(args.batch, args.num_classes, device)

    memory = {v: saved_bytes(models[v], optims[v], data) for v in variants}  # also warms up
    peak = {}
    times = {v: [] for v in variants}
    cpu_times = {v: [] for v in variants}
    print(f'{args.model}, batch {args.batch}, {device}, {torch.get_num_threads()} threads, '
          f'{args.reps} interleaved repetitions')
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(models[v], optims[v], data)
            sync(device)
            times[v].append(time.perf_counter() - t0)
            cpu_times[v].append(time.process_time() - c0)
            if device.type == 'cuda':
                peak[v] = torch.cuda.max_memory_allocated()
        print(f'  rep {rep + 1}/{args.reps}: ' +
              '  '.join(f'{v} {times[v][-1] * 1e3:.0f} ms' for v in variants), flush=True)

    med = {v: statistics.median(t) for v, t in times.items()}
    cpu = {v: statistics.median(t) for v, t in cpu_times.items()}
    names = {'a': 'upstream mmpretrain + CutMix', 'b': 'TL-Align (ours, share form)',
             'c': 'TL-Align K-dim, explicit attn'}
    print(f'\n{"variant":34s} {"step ms":>9s} {"x a":>7s} {"CPU ms":>9s} {"x a":>7s} '
          f'{"saved MiB":>10s} {"x a":>7s}' +
          (f' {"CUDA peak MiB":>14s} {"x a":>7s}' if peak else ''))
    for v in variants:
        row = (f'{v}  {names[v]:31s} {med[v] * 1e3:9.1f} {med[v] / med["a"]:7.3f} '
               f'{cpu[v] * 1e3:9.1f} {cpu[v] / cpu["a"]:7.3f} '
               f'{memory[v] / 2**20:10.1f} {memory[v] / memory["a"]:7.3f}')
        if peak:
            row += f' {peak[v] / 2**20:14.1f} {peak[v] / peak["a"]:7.3f}'
        print(row)
    for v in variants[1:]:
        print(f'ratio {v}/a: wall time {med[v] / med["a"]:.3f}, CPU time '
              f'{cpu[v] / cpu["a"]:.3f}, saved memory {memory[v] / memory["a"]:.3f}')


if __name__ == '__main__':
    main()
