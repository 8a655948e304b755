"""Test-suite set-up for machines with and without GPUs.

The CPU tests start tools (train/test/dist_train, demo, downstream) as subprocesses, and those
assume a CPU machine: a visible GPU makes them pick CUDA (two processes on one GPU, NCCL instead
of the gloo backend they assert, CUDA kernels in the bitwise-resume checks). So, for the whole
session, ``CUDA_VISIBLE_DEVICES`` is set to the empty string in this process's environment,
which every subprocess inherits (the tests build their ``env=`` from ``os.environ``). Tests
marked ``gpu`` get the original value back, for themselves and their subprocesses.

This process initialises CUDA *before* hiding the GPUs (CUDA reads the variable once, at
initialisation), so in-process code, the ``gpu`` tier included, still sees them.

``pytest -m gpu`` runs the GPU tier (tests/test_gpu.py); without CUDA those tests are skipped.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if HAS_CUDA:
    torch.cuda.init()  # fixes this process's view of the GPUs before the variable changes

_VISIBLE = 'CUDA_VISIBLE_DEVICES'
_ORIGINAL_VISIBLE = os.environ.get(_VISIBLE)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason='needs a CUDA GPU (the gpu tier)')
    for item in items:
        if 'gpu' in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(scope='session', autouse=True)
def hide_gpus_from_subprocesses():
    """CPU tests' subprocesses see no GPU (session-wide, before any module fixture runs)."""
    os.environ[_VISIBLE] = ''
    yield
    _restore(os.environ)


@pytest.fixture(autouse=True)
def gpus_for_gpu_tests(request, monkeypatch):
    """Tests marked ``gpu`` (and their subprocesses) see the machine's GPUs again."""
    if request.node.get_closest_marker('gpu') is None:
        yield
        return
    if _ORIGINAL_VISIBLE is None:
        monkeypatch.delenv(_VISIBLE, raising=False)
    else:
        monkeypatch.setenv(_VISIBLE, _ORIGINAL_VISIBLE)
    yield


def _restore(environ):
    if _ORIGINAL_VISIBLE is None:
        environ.pop(_VISIBLE, None)
    else:
        environ[_VISIBLE] = _ORIGINAL_VISIBLE
