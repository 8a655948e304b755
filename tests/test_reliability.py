"""Reliability (issue 7): exact resume, atomic checkpoints, correct DDP, non-finite loss, bad data.

The end-to-end tests drive tools/train.py and tools/dist_train.sh as subprocesses (real mmengine
Runner, TL-Align DeiT config shrunk to a tiny ViT, an ImageNet-layout folder on disk) and kill
them with SIGKILL; test-only hooks (RecordMixingHook, KillHook, PoisonHook) are written to a
temporary module that the test configs import.
"""
import glob
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import datagen
from helpers import free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
TIMEOUT = 300  # a hang fails the test instead of the suite

# --------------------------------------------------------------------------------------------
# configs and test-only hooks
# --------------------------------------------------------------------------------------------
# The TL-Align DeiT-S recipe (its hooks included) with a tiny ViT, 32 px images and the full
# DeiT augmentation (RandomResizedCrop, flip, RandAugment, RandomErasing), dropout and
# drop-path on, so that every kind of randomness is exercised.
BASE_CONFIG = """
_base_ = {root!r} + '/configs/tlalign/deit-s_8xb128.py'
DATA = {data!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=3,
                            feedforward_channels=96),
                  img_size=32, patch_size=8, drop_path_rate=0.1, drop_rate=0.1),
    head=dict(in_channels=48, num_classes=4))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=[103.53, 116.28, 123.675],
         fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=DATA, pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=DATA, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=1)
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=2, end=6, eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=1, by_epoch=False, max_keep_ckpts=2),
                     logger=dict(interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
"""

# the recipe's hooks plus test-only ones
HOOKS_OF_RECIPE = """
custom_imports = dict(imports=['mmtlalign', 'reltest_hooks'], allow_failed_imports=False)
custom_hooks = [
    dict(type='ExactResumeHook'), dict(type='NonFiniteLossHook'), dict(type='DataCheckHook'),
    dict(type='RecordMixingHook'),
{extra}]
"""

EPOCH_LOOP = """
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=3, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=2, end=12, eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=1, by_epoch=True, max_keep_ckpts=2))
log_processor = dict(by_epoch=True)
"""

TEST_HOOKS = '''
"""Test-only hooks for tests/test_reliability.py."""
import hashlib
import json
import os
import os.path as osp
import signal

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _digest(t):
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@HOOKS.register_module()
class RecordMixingHook(Hook):
    """Appends, per training iteration, digests of the batch the mixer got (data pipeline and
    sampler), of the mixed batch and token shares, and the partners and area shares."""

    def before_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        mixer = model.mixer
        path = osp.join(runner.work_dir, f'mixing-rank{runner.rank}-{os.getpid()}.jsonl')
        base = type(mixer)

        class Recording(base):
            def __call__(self, inputs, patch_size):
                out = base.__call__(self, inputs, patch_size)
                rec = dict(iter=runner.iter, inputs=_digest(inputs), mixed=_digest(out.inputs),
                           partner=out.partner.tolist(), area=out.area_share.tolist(),
                           share=_digest(out.token_share))
                with open(path, 'a') as f:
                    f.write(json.dumps(rec) + '\\n')
                return out

        mixer.__class__ = Recording


@HOOKS.register_module()
class KillHook(Hook):
    """SIGKILLs this process after iteration ``after_iter`` (1-based); with ``during_save``,
    instead halfway through writing that iteration's checkpoint file."""
    priority = 'LOWEST'

    def __init__(self, after_iter, during_save=False):
        self.after_iter, self.during_save = after_iter, during_save

    def before_train(self, runner):
        if not self.during_save:
            return
        from mmtlalign.engine.checkpoint import AtomicLocalBackend
        target = f'.iter_{self.after_iter}.pth'

        def write(f, data):
            if osp.basename(f.name).startswith(target):
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data)

        AtomicLocalBackend._write = staticmethod(write)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.during_save and runner.iter + 1 == self.after_iter:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class PoisonHook(Hook):
    """Makes the loss of iteration ``at_iter`` (1-based) NaN on ``rank`` (all ranks if None)
    by filling the classifier head's bias with NaN."""

    def __init__(self, at_iter, rank=None):
        self.at_iter, self.rank = at_iter, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at_iter and self.rank in (None, runner.rank):
            model = getattr(runner.model, 'module', runner.model)
            with torch.no_grad():
                model.head.layers.head.bias.fill_(float('nan'))
'''


class Env:
    """Paths of the shared test data, configs and hooks module."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.data = datagen.make_imagenet(osp.join(tmp, 'data'), per_class=4, size=40)
        self.hooks_dir = osp.join(tmp, 'hooks')
        os.makedirs(self.hooks_dir)
        with open(osp.join(self.hooks_dir, 'reltest_hooks.py'), 'w') as f:
            f.write(TEST_HOOKS)
        self.base = self.config('base', BASE_CONFIG.format(root=ROOT, data=self.data))

    def config(self, name, text, base=None):
        path = osp.join(self.tmp, f'{name}.py')
        if base is not None:
            text = f"_base_ = './{base}.py'\n" + text
        with open(path, 'w') as f:
            f.write(text)
        return path

    def recipe_config(self, name, extra_hooks='', body='', base='base'):
        return self.config(name, HOOKS_OF_RECIPE.format(extra=extra_hooks) + body, base=base)

    def run(self, args, timeout=TIMEOUT, extra_env=None):
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
                   PYTHONPATH=f'{ROOT}:{self.hooks_dir}')
        env.update(extra_env or {})
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def train(self, config, work_dir, *extra):
        return self.run([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
                         *extra])

    def dist_train(self, config, work_dir, nproc, *extra):
        return self.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), config, str(nproc),
                         '--work-dir', work_dir, *extra], extra_env={'PORT': str(free_port())})




@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return Env(str(tmp_path_factory.mktemp('reliability')))


def load(path):
    from mmtlalign.checkpoint.loader import load_checkpoint_file
    return load_checkpoint_file(path, map_location='cpu')


def assert_same(a, b, where=''):
    """Bitwise equality of nested checkpoint content."""
    if torch.is_tensor(a):
        same = torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
        assert same, f'{where} differs (max abs diff {(a.double() - b.double()).abs().max()})'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys differ'
        for k in a:
            assert_same(a[k], b[k], f'{where}/{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{where}: lengths differ'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def records(paths):
    """{iteration: record} of RecordMixingHook files (later files win)."""
    out = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                out[rec['iter']] = rec
    return out


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


# --------------------------------------------------------------------------------------------
# (1) exact resume and (2) atomic checkpoints
# --------------------------------------------------------------------------------------------
RESUME_CASES = {
    # IterBasedTrainLoop, a checkpoint every iteration, validation after iteration 3; the
    # process is killed halfway through writing iter_4.pth, so it resumes from iter_3.pth
    # (saved before that validation), replaying the loader past 3 batches.
    'iter': dict(body='', kill='dict(type=\'KillHook\', after_iter=4, during_save=True),\n',
                 final='iter_6.pth', resumed_from='iter_3.pth', resume_iter=3),
    # The recipe's EpochBasedTrainLoop, a checkpoint every epoch of 4 iterations, validation
    # every epoch, and the recipe's randomness.seed=None (each run draws its seed); killed
    # after iteration 6, in the middle of epoch 2, so it resumes from epoch_1.pth. The
    # uninterrupted run is given the seed the killed run drew.
    'epoch': dict(body=EPOCH_LOOP + 'randomness = dict(seed=None, deterministic=True)\n',
                  kill='dict(type=\'KillHook\', after_iter=6),\n',
                  final='epoch_3.pth', resumed_from='epoch_1.pth', resume_iter=4),
}
_resume_runs = {}


def resume_runs(env, case):
    """Killed run, resumed run and uninterrupted run of a case (run once per module)."""
    if case in _resume_runs:
        return _resume_runs[case]
    spec = RESUME_CASES[case]
    full_cfg = env.recipe_config(f'{case}_full', body=spec['body'])
    kill_cfg = env.recipe_config(f'{case}_kill', extra_hooks='    ' + spec['kill'],
                                 body=spec['body'])
    full_dir, resumed_dir = osp.join(env.tmp, f'{case}_full'), osp.join(env.tmp, f'{case}_kill')
    killed = env.train(kill_cfg, resumed_dir)
    after_kill = sorted(os.listdir(resumed_dir))
    last_after_kill = open(osp.join(resumed_dir, 'last_checkpoint')).read().strip()
    seed = load(last_after_kill)['meta']['seed']
    full = ok(env.train(full_cfg, full_dir, '--cfg-options', f'randomness.seed={seed}'))
    before = set(glob.glob(osp.join(resumed_dir, 'mixing-*.jsonl')))
    resumed = ok(env.train(full_cfg, resumed_dir, '--resume'))
    resumed_records = sorted(set(glob.glob(osp.join(resumed_dir, 'mixing-*.jsonl'))) - before)
    _resume_runs[case] = dict(
        spec=spec, full_dir=full_dir, resumed_dir=resumed_dir, full=full, killed=killed,
        after_kill=after_kill, last_after_kill=last_after_kill, resumed=resumed,
        resumed_records=resumed_records, seed=seed)
    return _resume_runs[case]


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(RESUME_CASES))
def test_exact_resume_after_sigkill(env, case):
    runs = resume_runs(env, case)
    spec = runs['spec']
    assert runs['killed'].returncode == -signal.SIGKILL, runs['killed'].stderr[-3000:]
    assert runs['last_after_kill'] == osp.join(runs['resumed_dir'], spec['resumed_from'])
    log = runs['resumed'].stdout + runs['resumed'].stderr
    assert 'resumed epoch' in log

    # final weights, optimizer, schedulers and saved random state: bitwise identical
    full = load(osp.join(runs['full_dir'], spec['final']))
    resumed = load(osp.join(runs['resumed_dir'], spec['final']))
    for key in ('state_dict', 'optimizer', 'param_schedulers', 'exact_resume'):
        assert_same(full[key], resumed[key], key)
    assert full['meta']['iter'] == resumed['meta']['iter']

    # every iteration after the resume point saw the same batch and made the same mixing
    # decisions (partners, boxes/area shares, token shares) as the uninterrupted run
    expected = records(glob.glob(osp.join(runs['full_dir'], 'mixing-*.jsonl')))
    got = records(runs['resumed_records'])
    assert sorted(got) == list(range(spec['resume_iter'], full['meta']['iter']))
    for it, rec in got.items():
        assert rec == expected[it], f'iteration {it + 1} differs after resume'
    # the run really mixed (some partner boxes) after the resume point
    assert any(max(rec['area']) > 0 for rec in got.values())
    if case == 'epoch':  # the resumed run drew another seed; the loader took the old one
        assert f"reseeded with the interrupted run's seed {runs['seed']}" in log


@pytest.mark.slow
def test_kill_while_writing_checkpoint_keeps_previous_and_last_checkpoint(env):
    runs = resume_runs(env, 'iter')
    work = runs['resumed_dir']
    # killed halfway through writing iter_4.pth: only a temporary file holds the partial
    # write; the final name never existed, the previous checkpoints are intact (the outdated
    # iter_2.pth is deleted only after a new checkpoint is complete), last_checkpoint names
    # the last complete one
    partial = [n for n in runs['after_kill'] if n.startswith('.iter_4.pth.tmp-')]
    assert partial, runs['after_kill']
    assert 'iter_4.pth' not in runs['after_kill']
    assert {'iter_2.pth', 'iter_3.pth'} <= set(runs['after_kill'])
    assert runs['last_after_kill'].endswith('iter_3.pth')
    # resume picked the last complete checkpoint and removed the partial write
    log = runs['resumed'].stdout + runs['resumed'].stderr
    # --resume reads last_checkpoint itself (checked) and hands mmengine the path
    assert f'Load checkpoint from {work}/iter_3.pth' in log
    assert f'Removed {work}/{partial[0]}' in log
    assert not glob.glob(osp.join(work, '.*.tmp-*'))
    # max_keep_ckpts=2 still holds, and last_checkpoint names the final checkpoint
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_5.pth',
                                                                        'iter_6.pth']
    assert open(osp.join(work, 'last_checkpoint')).read().strip() == osp.join(work, 'iter_6.pth')


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    from mmtlalign.engine.checkpoint import AtomicLocalBackend, atomic_write
    target = tmp_path / 'ckpt.pth'
    atomic_write(target, b'complete old checkpoint')

    def broken(f, data):
        f.write(data[:5])
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(AtomicLocalBackend, '_write', staticmethod(broken))
    with pytest.raises(OSError, match='No space left'):
        AtomicLocalBackend().put(b'new checkpoint', str(target))
    assert target.read_bytes() == b'complete old checkpoint'
    assert os.listdir(tmp_path) == ['ckpt.pth']  # the temporary file is cleaned up


# --------------------------------------------------------------------------------------------
# (3) DDP
# --------------------------------------------------------------------------------------------
DDP_BODY = """
train_dataloader = dict(batch_size=2)
train_cfg = dict(max_iters=4, val_interval=4)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
"""


@pytest.mark.slow
def test_ddp_trains_without_find_unused_parameters_and_resumes_exactly(env):
    cfg = env.recipe_config('ddp', body=DDP_BODY)
    work = osp.join(env.tmp, 'ddp')
    result = ok(env.dist_train(cfg, work, 2))
    log = result.stdout + result.stderr
    assert 'Iter(train) [4/4]' in log
    dumped = open(osp.join(work, 'ddp.py')).read()
    assert "find_unused_parameters=False" in dumped.replace(' ', '')
    assert "backend='gloo'" in dumped
    # each process mixes with its own generator, inside its own batch
    per_rank = [records(glob.glob(osp.join(work, f'mixing-rank{r}-*.jsonl'))) for r in (0, 1)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in per_rank)
    assert [r['inputs'] for r in per_rank[0].values()] != \
        [r['inputs'] for r in per_rank[1].values()]
    ckpt = load(osp.join(work, 'iter_3.pth'))
    state = ckpt['exact_resume']
    assert state['world_size'] == 2 and len(state['ranks']) == 2
    assert state['ranks'][0]['mixers'] != state['ranks'][1]['mixers']

    # resume the 2-process run from iter_3.pth in a fresh folder: iter_4.pth is bitwise the same
    work2 = osp.join(env.tmp, 'ddp_resumed')
    os.makedirs(work2)
    shutil.copy(osp.join(work, 'iter_3.pth'), work2)
    ok(env.dist_train(cfg, work2, 2, '--resume', osp.join(work2, 'iter_3.pth')))
    a, b = load(osp.join(work, 'iter_4.pth')), load(osp.join(work2, 'iter_4.pth'))
    for key in ('state_dict', 'optimizer', 'exact_resume'):
        assert_same(a[key], b[key], key)
    for r in (0, 1):
        resumed = records(glob.glob(osp.join(work2, f'mixing-rank{r}-*.jsonl')))
        assert resumed == {3: per_rank[r][3]}


# -- one optimizer step: DDP on 2 processes == 1 process on the combined batch, same pairs --
LOCAL_BATCH, WORLD, NUM_CLASSES = 4, 2, 4


def _fixed_mix_class():
    from mmtlalign.models.alignment import token_share_from_mask
    from mmtlalign.models.mixing import MixedBatch, TLAlignMix

    class FixedMix(TLAlignMix):
        """Given mixing decisions: partner indices (inside the batch) and pixel masks."""

        def __init__(self, partner, mask):
            super().__init__()
            self.partner, self.mask = partner, mask

        def __call__(self, inputs, patch_size):
            H, W = inputs.shape[-2:]
            grid = (H // patch_size[0], W // patch_size[1])
            mask = self.mask.to(inputs)
            return MixedBatch(
                inputs=torch.lerp(inputs, inputs[self.partner], mask[:, None]),
                partner=self.partner,
                token_share=token_share_from_mask(mask, grid),
                area_share=mask.mean(dim=(1, 2)),
                uniform=False)

    return FixedMix


def _tiny_classifier():
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmtlalign  # noqa: F401
    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='TLAlignClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=NUM_CLASSES,
                               mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               to_rgb=True),
        backbone=dict(type='AlignedVisionTransformer', img_size=32, patch_size=8,
                      arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                feedforward_channels=96)),
        head=dict(type='VisionTransformerClsHead', num_classes=NUM_CLASSES, in_channels=48,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'))))


def _step_setup():
    """Initial weights, 8 images, labels, per-process partners and per-image box masks."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = _tiny_classifier()
    model.init_weights()
    n = LOCAL_BATCH * WORLD
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (n, ), generator=g)
    partners = [torch.randperm(LOCAL_BATCH, generator=g) for _ in range(WORLD)]
    mask = torch.zeros(n, 32, 32)
    for i in range(n):  # a different patch-aligned box per image, as in mode='elem'
        y, x = (i * 8) % 24, (i * 16) % 24
        mask[i, y:y + 8 + 8 * (i % 2), x:x + 16] = 1
    return dict(init=model.state_dict(), images=images, labels=labels, partners=partners,
                mask=mask)


def _batch(setup, idx):
    from mmpretrain.structures import DataSample
    return dict(inputs=[setup['images'][i] for i in idx],
                data_samples=[DataSample().set_gt_label(int(setup['labels'][i])) for i in idx])


def _ddp_step_worker(rank, port, path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        setup = torch.load(path + '.setup')
        model = _tiny_classifier()
        model.load_state_dict(setup['init'])
        idx = list(range(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH))
        model.mixer = _fixed_mix_class()(setup['partners'][rank], setup['mask'][idx])
        ddp = MMDistributedDataParallel(module=model, device_ids=None, broadcast_buffers=False,
                                        find_unused_parameters=False)
        optim = OptimWrapper(torch.optim.SGD(ddp.parameters(), lr=1.0))
        log_vars = ddp.train_step(_batch(setup, idx), optim_wrapper=optim)
        if rank == 0:
            torch.save(dict(state=model.state_dict(), loss=float(log_vars['loss'])), path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_step_equals_one_process_on_combined_batch(tmp_path):
    """Gradients are averaged over processes and each process's loss is the mean over its
    batch, so with equal local batches, per-image losses (no batch statistics in a ViT) and
    pairs inside each process, one DDP step is one step on the combined batch with the same
    pairs (partner indices offset by the process's position in the combined batch)."""
    import torch.multiprocessing as mp
    from mmengine.optim import OptimWrapper
    setup = _step_setup()
    path = str(tmp_path / 'ddp_step.pth')
    torch.save(setup, path + '.setup')
    mp.spawn(_ddp_step_worker, args=(free_port(), path), nprocs=WORLD, join=True)
    ddp = torch.load(path)

    model = _tiny_classifier()
    model.load_state_dict(setup['init'])
    partner = torch.cat([p + r * LOCAL_BATCH for r, p in enumerate(setup['partners'])])
    model.mixer = _fixed_mix_class()(partner, setup['mask'])
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.0))
    log_vars = model.train_step(_batch(setup, range(LOCAL_BATCH * WORLD)), optim_wrapper=optim)

    single = model.state_dict()
    largest = 0.0
    for name, init in setup['init'].items():
        update_ddp = ddp['state'][name] - init
        update_single = single[name] - init
        largest = max(largest, update_single.abs().max().item())
        torch.testing.assert_close(update_ddp, update_single, rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f'{name}: {m}')
    assert largest > 1e-3  # the step did change the weights
    # the DDP loss is rank 0's half; the aligned targets did come from mixed pairs
    assert np.isfinite(ddp['loss']) and np.isfinite(float(log_vars['loss']))


# --------------------------------------------------------------------------------------------
# (4) non-finite loss
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nonfinite_loss_stops_with_message_and_keeps_last_good_checkpoint(env):
    cfg = env.recipe_config('nan', extra_hooks="    dict(type='PoisonHook', at_iter=3),\n")
    work = osp.join(env.tmp, 'nan')
    result = env.train(cfg, work)
    assert result.returncode != 0
    err = result.stderr
    assert 'NonFiniteLossError: Non-finite loss at iteration 3: loss=nan' in err, err[-3000:]
    assert f'The last good checkpoint is {work}/iter_2.pth' in err
    assert 'Iter(train) [3/6]' not in result.stdout + err  # not logged, not saved
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_1.pth',
                                                                        'iter_2.pth']
    assert open(osp.join(work, 'last_checkpoint')).read().strip() == osp.join(work, 'iter_2.pth')
    state = load(osp.join(work, 'iter_2.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_nonfinite_loss_on_one_ddp_rank_stops_every_rank(env):
    cfg = env.recipe_config(
        'ddp_nan', extra_hooks="    dict(type='PoisonHook', at_iter=2, rank=1),\n",
        body=DDP_BODY)
    work = osp.join(env.tmp, 'ddp_nan')
    result = env.dist_train(cfg, work, 2)  # a hang would hit the timeout
    assert result.returncode != 0
    assert 'Non-finite loss at iteration 2 on rank(s) [1]' in result.stderr, \
        result.stderr[-3000:]
    assert not osp.exists(osp.join(work, 'iter_2.pth'))
    assert open(osp.join(work, 'last_checkpoint')).read().strip() == osp.join(work, 'iter_1.pth')


def test_checkpoint_with_nonfinite_weights_is_refused(tmp_path):
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from mmtlalign.engine import NonFiniteLossError, NonFiniteLossHook
    runner = SimpleNamespace(work_dir=str(tmp_path), iter=41,
                             logger=MMLogger.get_instance('reliability-test'))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_40.pth'))
    hook = NonFiniteLossHook()
    good = {'state_dict': {'w': torch.ones(3), 'steps': torch.tensor(3)}}
    hook.before_save_checkpoint(runner, good)
    bad = {'state_dict': {'w': torch.tensor([1.0, float('inf')])}}
    with pytest.raises(NonFiniteLossError, match=r"iteration 42: weight 'w' has NaN/Inf.*"
                       r'iter_40\.pth'):
        hook.before_save_checkpoint(runner, bad)


# --------------------------------------------------------------------------------------------
# (5) bad data
# --------------------------------------------------------------------------------------------
def _bad_data_runner(env, tmp, name, data, on_error='raise', num_workers=0, folder_scan=False):
    """A Runner (in this process) of the recipe config on ``data``, 2 iterations."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mmtlalign  # noqa: F401
    cfg = Config.fromfile(env.base)
    cfg.work_dir = osp.join(tmp, name)
    cfg.experiment_name = f'bad-data-{name}'
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 100
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint.interval = 100
    loader = cfg.train_dataloader
    loader.dataset.data_root = data
    loader.num_workers = num_workers
    # plain shuffling: with repeated augmentation 2 iterations would see 3 distinct images
    loader.sampler = dict(type='DefaultSampler', shuffle=True)
    if folder_scan:  # classes from the folders of train/, no annotation file
        loader.dataset = dict(type='CustomDataset', data_root=data, data_prefix='train',
                              pipeline=loader.dataset.pipeline)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'DataCheckHook']
    cfg.custom_hooks.append(dict(type='DataCheckHook', on_error=on_error))
    return Runner.from_cfg(cfg)


def _copy_data(env, tmp, name):
    return shutil.copytree(env.data, osp.join(tmp, name + '_data'))


def _train_image(data, label=1, i=2):
    return osp.join(data, 'train', f'n{label:08d}', f'n{label:08d}_{i}.JPEG')


def _truncate(path):
    raw = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(raw[:len(raw) // 2])


def test_annotation_referencing_missing_image_is_named_before_training(env, tmp_path):
    from mmtlalign.engine import DataError
    data = _copy_data(env, str(tmp_path), 'missing')
    missing = _train_image(data)
    os.remove(missing)
    runner = _bad_data_runner(env, str(tmp_path), 'missing', data)
    with pytest.raises(DataError, match=r'(?s)missing image: ' + missing) as e:
        runner.train()
    assert 'meta/train.txt' in str(e.value)
    assert runner.iter == 0


def test_empty_class_folder_is_named(env, tmp_path):
    from mmtlalign.engine import DataError
    data = _copy_data(env, str(tmp_path), 'empty')
    folder = osp.join(data, 'train', 'n00000002')
    for name in os.listdir(folder):
        os.remove(osp.join(folder, name))
    runner = _bad_data_runner(env, str(tmp_path), 'empty', data, folder_scan=True)
    with pytest.raises(DataError, match='empty class folder: ' + folder):
        runner.train()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['corrupt', 'truncated'])
def test_corrupt_or_truncated_image_is_named_from_loader_worker(env, tmp_path, kind):
    """A data-loader worker process (the loop's loader already started when the hook swaps the
    image loader in) raises an error naming the file; no hang, no silent grey image."""
    from mmtlalign.engine import DataError
    data = _copy_data(env, str(tmp_path), kind)
    bad = [_train_image(data, label, i) for label in range(4) for i in range(4)]
    for path in bad:  # every image, so that the first batch meets one
        if kind == 'truncated':
            _truncate(path)
        else:
            with open(path, 'wb') as f:
                f.write(b'\xff\xd8' + os.urandom(2000) + b'\xff\xd9')
    runner = _bad_data_runner(env, str(tmp_path), kind, data, num_workers=1)
    expected = 'truncated JPEG image' if kind == 'truncated' else 'corrupt image'
    with pytest.raises(DataError, match=expected + r'.*: .*/train/n0000000\d/n0000000\d_\d.JPEG'):
        runner.train()


@pytest.mark.slow
def test_bad_images_are_logged_and_skipped_when_asked(env, tmp_path):
    data = _copy_data(env, str(tmp_path), 'skip')
    truncated = [_train_image(data, label, i) for label in (0, 1) for i in range(4)]
    for path in truncated:
        _truncate(path)
    missing = _train_image(data, 3, 1)
    os.remove(missing)
    runner = _bad_data_runner(env, str(tmp_path), 'skip', data, on_error='skip')
    runner.train()
    assert runner.iter == 2
    log = open(glob.glob(osp.join(str(tmp_path), 'skip', '*', '*.log'))[0]).read()
    assert 'missing image: ' + missing in log and 'are skipped' in log
    # the 8 samples of 2 iterations meet some of the 8 truncated images
    assert 'truncated JPEG image' in log
    assert any(f'Skipping image {path}: truncated JPEG image' in log for path in truncated)
