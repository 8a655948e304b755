"""GPU behaviour that a CPU machine can check by emulation: NonFiniteLossHook under AMP's loss
scaler (a real mmengine Runner and a real ``AmpOptimWrapper``, whose CUDA GradScaler is swapped
for torch's CPU one), per-GPU random state on resume (faked CUDA generator functions) and the
TF32 decision (faked compute capability)."""
import functools
import glob
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.runner import Runner
from torch.utils.data import DataLoader

import mmtlalign  # noqa: F401
from mmtlalign.engine import precision, resume
from mmtlalign.engine.nonfinite import NonFiniteLossError
from mmtlalign.errors import UserInputError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


# --------------------------------------------------------------------------------------------
# NonFiniteLossHook under AMP
# --------------------------------------------------------------------------------------------
class OverflowingModel(BaseModel):
    """A linear regression whose loss is +inf at the given (1-based) iterations, as an fp16
    forward overflow gives it; ``poison_at`` also fills its weight with NaN first."""

    def __init__(self, overflow_at=(), poison_at=None):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.overflow_at, self.poison_at = set(overflow_at), poison_at
        self.iteration = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.iteration += 1
        if self.iteration == self.poison_at:
            with torch.no_grad():
                self.linear.weight.fill_(float('nan'))
        loss = self.linear(inputs).float().square().mean()
        if self.iteration in self.overflow_at:
            loss = loss * float('inf')
        return dict(loss=loss)


@pytest.fixture
def amp_on_cpu(monkeypatch):
    """mmengine's AmpOptimWrapper on CPU: its GPU check passes and its scaler is torch's
    GradScaler for CPU (same dynamic scaling: skip the step on inf/NaN gradients, halve). The
    rest of mmengine sees a CPU machine (also on a GPU machine: the Runner keeps the model on
    the CPU and autocast is the CPU's)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))


@pytest.fixture(autouse=True)
def restore_default_scope():
    """A Runner makes its scope ('mmengine') the current one for every later build in this
    process; put the previous current scope back so that other tests build as before."""
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        del DefaultScope._instance_dict[name]


def train(tmp_path, model, optim_wrapper, hook=None, max_iters=6):
    data = [torch.randn(4) for _ in range(max_iters * 2)]
    runner = Runner(
        model=model, work_dir=str(tmp_path),
        train_dataloader=DataLoader(data, batch_size=2, collate_fn=lambda b: dict(
            inputs=torch.stack(b))),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optim_wrapper, optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='NonFiniteLossHook', **(hook or {}))],
        log_processor=dict(by_epoch=False),
        experiment_name=f'exp{len(glob.glob(str(tmp_path / "exp*")))}')
    runner.logger.setLevel(logging.INFO)
    return runner


def log_text(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def test_amp_overflow_is_skipped_not_a_stop(tmp_path, amp_on_cpu):
    model = OverflowingModel(overflow_at=(2, 3))
    runner = train(tmp_path, model, dict(type='AmpOptimWrapper', loss_scale='dynamic'))
    runner.train()  # no stop
    scaler = runner.optim_wrapper.loss_scaler
    assert scaler.get_scale() == 65536.0 / 4  # two skipped steps halved it twice
    assert torch.isfinite(model.linear.weight).all()
    log = log_text(runner)
    assert 'Non-finite loss at iteration 2: loss=inf. The loss scaler skipped this step' in log
    assert '2 in a row, training stops at 10' in log
    assert osp.isfile(osp.join(str(tmp_path), 'iter_6.pth'))


def test_same_overflow_without_a_loss_scaler_stops(tmp_path):
    runner = train(tmp_path, OverflowingModel(overflow_at=(2,)), dict(type='OptimWrapper'))
    with pytest.raises(NonFiniteLossError, match='Non-finite loss at iteration 2: loss=inf'):
        runner.train()


def test_amp_stops_after_max_consecutive_nonfinite_losses(tmp_path, amp_on_cpu):
    runner = train(tmp_path, OverflowingModel(overflow_at=range(3, 10)),
                   dict(type='AmpOptimWrapper', loss_scale='dynamic'),
                   hook=dict(max_consecutive=3), max_iters=8)
    with pytest.raises(NonFiniteLossError, match=r'iteration 5: loss=inf\. Under mixed precision, '
                       r'3 non-finite losses in a row \(limit max_consecutive=3; loss scale '
                       r'8192\): training diverged\. The last good checkpoint is .*iter_4\.pth'):
        runner.train()


def test_amp_stops_when_the_loss_scale_collapses(tmp_path, amp_on_cpu):
    runner = train(tmp_path, OverflowingModel(overflow_at=(2, 3, 4)),
                   dict(type='AmpOptimWrapper', loss_scale=dict(init_scale=4.0)),
                   hook=dict(min_loss_scale=1.0))
    with pytest.raises(NonFiniteLossError, match=r'at iteration 4: the dynamic loss scale fell to '
                       r'0\.5, below min_loss_scale=1'):
        runner.train()


def test_amp_stops_on_nonfinite_weights(tmp_path, amp_on_cpu):
    runner = train(tmp_path, OverflowingModel(poison_at=3),
                   dict(type='AmpOptimWrapper', loss_scale='dynamic'))
    with pytest.raises(NonFiniteLossError, match=r'iteration 3: loss=nan\. Under mixed precision '
                       r'the weights became non-finite \(linear\.weight'):
        runner.train()


# --------------------------------------------------------------------------------------------
# per-GPU random state on resume
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_gpus(monkeypatch):
    """CUDA generator functions faked on CPU: ``fake_gpus.count`` visible GPUs, each with a
    byte-tensor state; ``fake_gpus.states`` what was set."""

    class Gpus:
        count = 2
        states = {}

    def set_one(state, device=0):
        Gpus.states[device] = state.clone()

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: Gpus.count > 0)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: Gpus.count > 0)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: Gpus.count)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all',
                        lambda: [torch.full((8,), i, dtype=torch.uint8) for i in range(Gpus.count)])
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all',
                        lambda states: [set_one(s, i) for i, s in enumerate(states)])
    monkeypatch.setattr(torch.cuda, 'set_rng_state', set_one)
    return Gpus


def test_cuda_rng_state_is_restored_per_gpu_and_count_changes_are_reported(fake_gpus):
    fake_gpus.count = 4
    saved = resume.global_rng_state()
    assert len(saved['cuda']) == 4
    assert resume.set_global_rng_state(saved) is None  # same GPUs: all restored, silently
    assert sorted(fake_gpus.states) == [0, 1, 2, 3]

    fake_gpus.count, fake_gpus.states = 2, {}
    problem = resume.set_global_rng_state(saved)
    assert 'CUDA random state of 4 GPU(s) but this process sees 2' in problem
    assert 'restored GPU(s) 0-1 only' in problem
    assert {d: s[0].item() for d, s in fake_gpus.states.items()} == {0: 0, 1: 1}

    fake_gpus.count, fake_gpus.states = 0, {}
    assert 'this process sees none' in resume.set_global_rng_state(saved)
    assert fake_gpus.states == {}

    fake_gpus.count = 2
    del saved['cuda']
    assert 'holds no CUDA random state' in resume.set_global_rng_state(saved)


def test_resume_hook_logs_the_gpu_count_warning(fake_gpus):
    """The warning reaches the run's log, through the hook's restore step."""
    from types import SimpleNamespace

    logger = MMLogger.get_instance('resume-gpu-test')
    messages = []
    logger.warning = messages.append
    fake_gpus.count = 8
    state = {'global': resume.global_rng_state(), 'mixers': {}}
    fake_gpus.count = 1

    loop = SimpleNamespace(iter=4, epoch=0, dataloader=[0] * 10,
                           dataloader_iterator=iter(range(100)))
    runner = SimpleNamespace(train_loop=loop, logger=logger, model=torch.nn.Linear(1, 1))
    hook = resume.ExactResumeHook()
    hook._pending = {'iter': 4, 'world_size': 1, 'dataloader_len': 10, 'ranks': [state]}
    hook.before_train(runner)
    for _ in range(5):  # the loop skips the 4 trained batches; restore runs before the 5th
        next(runner.train_loop.dataloader_iterator)
    assert any('CUDA random state of 8 GPU(s) but this process sees 1' in m for m in messages)


# --------------------------------------------------------------------------------------------
# TF32
# --------------------------------------------------------------------------------------------
@pytest.fixture
def capability(monkeypatch):
    """Fake one visible GPU of a given compute capability; restores torch's TF32 flags."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    box = {'cc': None}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: box['cc'] is not None)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1 if box['cc'] else 0)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: box['cc'])
    yield box
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def tf32_flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_tf32_on_for_ampere_and_newer_unless_switched_off(capability):
    capability['cc'] = (8, 0)  # A100
    assert precision.configure_tf32(Config(dict())) is True
    assert tf32_flags() == (True, True)
    assert precision.configure_tf32(Config(dict(tf32=False))) is False
    assert tf32_flags() == (False, False)
    capability['cc'] = (9, 0)  # H100
    assert precision.configure_tf32(Config(dict(tf32=True))) is True
    capability['cc'] = (7, 0)  # V100: no TF32, nothing touched
    torch.backends.cuda.matmul.allow_tf32 = False
    assert precision.configure_tf32(Config(dict())) is None
    assert tf32_flags()[0] is False
    capability['cc'] = None  # CPU
    assert precision.configure_tf32(Config(dict())) is None
    with pytest.raises(UserInputError, match="config key tf32 must be True or False, got 'no'"):
        precision.configure_tf32(Config(dict(tf32='no')))


@pytest.mark.slow
def test_train_tool_reports_a_bad_tf32_switch_in_one_line():
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(ROOT, 'configs', 'tlalign', 'deit-t_8xb128.py'), '--cfg-options', 'tf32=maybe'],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config key tf32 must be True or False, got 'maybe'; e.g. --cfg-options "
        'tf32=False to keep full float32 matmuls.')


# --------------------------------------------------------------------------------------------
# the test suite on a GPU machine
# --------------------------------------------------------------------------------------------
def test_cpu_tests_hide_gpus_from_their_subprocesses():
    """conftest.py: a tool started the way the tests start them sees no GPU (the gpu tier
    checks the opposite in tests/test_gpu.py)."""
    assert os.environ.get('CUDA_VISIBLE_DEVICES') == ''
    result = subprocess.run(
        [sys.executable, '-c', 'import os, torch; '
         'print(repr(os.environ.get("CUDA_VISIBLE_DEVICES")), torch.cuda.device_count())'],
        env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["''", '0'], result.stderr
