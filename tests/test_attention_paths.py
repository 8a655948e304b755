"""The two implementations of ``attention_with_share`` against upstream's plain call, on CPU.

``'separate'`` is what every non-CPU device runs (a GPU among them); it is forced on CPU here.
Both must give upstream's features bit for bit, upstream's gradients, and have autograd save
exactly the bytes upstream's call saves (the memory claim), while tracing ``A_mean @ s``.
"""
import logging

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

import mmtlalign  # noqa: F401
from mmtlalign.errors import UserInputError
from mmtlalign.models import alignment

from helpers import make_vit_pair, saved_bytes, vit_grid_share

MMLogger.get_current_instance().setLevel(logging.WARNING)
IMPLS = ['cpu_flash', 'separate']


def qkv(B=2, heads=3, N=17, D=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, heads, N, D, generator=g) * 2).to(dtype).requires_grad_()
            for _ in range(3)]


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('channels', [None, 3])
def test_features_gradients_and_saved_bytes_equal_upstream(impl, channels):
    q, k, v = qkv()
    B, heads, N, D = q.shape
    g = torch.Generator().manual_seed(1)
    share = torch.rand(B, N, generator=g) if channels is None else \
        torch.rand(B, N, channels, generator=g)

    ref, ref_bytes = saved_bytes(lambda: F.scaled_dot_product_attention(q, k, v))
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    with alignment.share_attention_impl(impl):
        (out, attended), got_bytes = saved_bytes(
            lambda: alignment.attention_with_share(q, k, v, share))
    grads = torch.autograd.grad(out, (q, k, v), grad)

    assert torch.equal(out, ref)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    assert got_bytes == ref_bytes
    assert attended.dtype == torch.float32 and not attended.requires_grad
    attn = torch.softmax(q.detach() @ k.detach().transpose(-2, -1) * D**-0.5, dim=-1).mean(1)
    expected = attn @ (share if channels else share[..., None])
    torch.testing.assert_close(attended, expected if channels else expected[..., 0])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_separate_path_under_autocast_matches_upstream(dtype):
    q, k, v = qkv()
    share = torch.rand(2, 17)
    with torch.autocast('cpu', dtype=dtype):
        qh, kh, vh = (t * 1 for t in (q, k, v))  # half copies, as a linear layer gives them
        ref = F.scaled_dot_product_attention(qh, kh, vh)
        with alignment.share_attention_impl('separate'):
            out, attended = alignment.attention_with_share(qh, kh, vh, share)
    assert out.dtype == dtype and torch.equal(out, ref)
    assert attended.dtype == torch.float32


@pytest.mark.parametrize('impl', IMPLS)
def test_vit_training_step_equals_upstream_on_each_path(impl):
    """A DeiT-T forward + backward: same features, bitwise gradients and the same bytes saved
    for backward as the mmpretrain parent, with the share traced."""
    parent, aligned = make_vit_pair('deit-tiny', 'cls_token')
    parent.train()
    aligned.train()
    x = torch.randn(2, 3, 224, 224)
    torch.manual_seed(1)
    ref, ref_bytes = saved_bytes(lambda: parent(x))
    ref[-1].square().sum().backward()
    torch.manual_seed(1)
    with alignment.share_attention_impl(impl):
        (outs, share), got_bytes = saved_bytes(
            lambda: aligned.forward_aligned(x, vit_grid_share(2, (14, 14), 0)))
    outs[-1].square().sum().backward()
    assert torch.equal(outs[-1], ref[-1])
    assert got_bytes == ref_bytes
    for (name, p), a in zip(parent.named_parameters(), aligned.parameters()):
        assert torch.equal(p.grad, a.grad), name
    assert share.dtype == torch.float32


def test_both_paths_trace_the_same_shares():
    _, aligned = make_vit_pair('deit-tiny', 'avg_featmap')
    x = torch.randn(2, 3, 224, 224)
    token_share = vit_grid_share(2, (14, 14), 3)
    with torch.no_grad():
        with alignment.share_attention_impl('cpu_flash'):
            a = aligned.trace_shares(x, token_share).history
        with alignment.share_attention_impl('separate'):
            b = aligned.trace_shares(x, token_share).history
    for sa, sb in zip(a, b):
        torch.testing.assert_close(sa, sb, atol=1e-6, rtol=0)


def test_auto_path_choice_and_errors(monkeypatch):
    assert alignment.resolve_share_attention('cpu') == 'cpu_flash'
    assert alignment.resolve_share_attention('cuda') == 'separate'
    with alignment.share_attention_impl('cpu_flash'):
        with pytest.raises(UserInputError, match="'cpu_flash' runs on CPU tensors only"):
            alignment.resolve_share_attention('cuda')
    with alignment.share_attention_impl('cuda_flash'):  # the experimental opt-in
        with pytest.raises(UserInputError, match="'cuda_flash' runs on CUDA tensors only"):
            alignment.attention_with_share(*qkv(), torch.rand(2, 17))
    with pytest.raises(UserInputError, match="unknown share attention implementation 'flash'"):
        with alignment.share_attention_impl('flash'):
            pass
    monkeypatch.setattr(alignment, '_share_attention', 'separate')  # MMTLALIGN_SHARE_ATTENTION
    assert alignment.resolve_share_attention('cpu') == 'separate'
