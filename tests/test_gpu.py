"""The GPU tier: ``pytest -m gpu`` on a machine with a CUDA GPU (skipped without one).

- TL-Align training steps of DeiT and Swin through ``tools/train.py --amp``, fp16 and bf16
  (``--cfg-options optim_wrapper.dtype=bfloat16``);
- features (bitwise) and gradients of the aligned ViT against mmpretrain's on CUDA, and the
  bytes autograd saves (ratio 1.000), in float32 and under fp16/bf16 autocast; the same for the
  experimental opt-in 'cuda_flash' attention path (to rounding);
- a 1-GPU ``tools/dist_train.sh`` run (NCCL, the GPU, not gloo on the CPU);
- mmcv's CUDA ops (nms, RoIAlign) against their CPU results;
- one Mask R-CNN and one UperNet training run (two iterations) on the GPU.

conftest.py gives these tests (and their subprocesses) the GPUs that it hides from the rest.
"""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import datagen
from datagen import DET_TINY, SEG_TINY
from helpers import (
    free_port,
    make_vit_pair,
    ok,
    run_tool,
    saved_bytes,
    vit_grid_share,
    write_config,
)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
CONFIGS = osp.join(ROOT, 'configs')
SEG_SWIN = osp.join(CONFIGS, 'tlalign', 'ade20k',
                    'upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py')
DET_SWIN = osp.join(CONFIGS, 'tlalign', 'coco', 'mask-rcnn_tlalign-swin-t_fpn_1x_coco.py')
AMP_DTYPES = {'fp16': [], 'bf16': ['optim_wrapper.dtype=bfloat16']}

# the TL-Align recipes with a tiny ViT / Swin-T at 64 px, as a user would shrink them
CLS_CONFIG = datagen.TINY_64PX_PIPELINES + """
_base_ = {base!r}
model = dict(backbone=dict({backbone}){head})
randomness = dict(seed=0)
"""
BACKBONES = {
    'deit': (osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py'),
             "arch=dict(_delete_=True, embed_dims=96, num_layers=2, num_heads=3, "
             "feedforward_channels=192), img_size=64, patch_size=16",
             ', head=dict(in_channels=96)'),
    'swin': (osp.join(ROOT, 'configs/tlalign/swin-t_16xb64.py'), 'pad_small_map=True', ''),
}


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return datagen.make_imagenet(str(tmp_path_factory.mktemp('imagenet')), per_class=2)


@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    return datagen.make_ade20k(str(tmp_path_factory.mktemp('ade20k')))


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return datagen.make_coco(str(tmp_path_factory.mktemp('coco')))


def cls_config(tmp_path, model):
    base, backbone, head = BACKBONES[model]
    return write_config(tmp_path / f'{model}.py', CLS_CONFIG, base=base, backbone=backbone,
                        head=head)


def test_gpu_tests_and_their_subprocesses_see_the_gpus():
    """conftest.py hides the GPUs from the CPU tests only."""
    assert os.environ.get('CUDA_VISIBLE_DEVICES') != ''
    result = subprocess.run([PY, '-c', 'import torch; print(torch.cuda.device_count())'],
                            env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert int(result.stdout) == torch.cuda.device_count() >= 1, result.stderr


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize('amp', sorted(AMP_DTYPES))
@pytest.mark.parametrize('model', ['deit', 'swin'])
def test_tlalign_trains_with_amp(model, amp, imagenet, tmp_path):
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), cls_config(tmp_path, model),
                        '--work-dir', work, '--amp', '--cfg-options',
                        *datagen.tiny_cls_options(imagenet, batch_size=4), *AMP_DTYPES[amp]]))
    assert 'token_fluctuation' in out  # the TL-Align loss ran
    ckpt = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    assert 'loss_scaler' in ckpt['optimizer']  # AmpOptimWrapper trained it
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())
    dumped = glob.glob(osp.join(work, '*', 'vis_data', 'config.py')) + \
        glob.glob(osp.join(work, '*.py'))
    text = ''.join(open(p).read() for p in dumped)
    assert "type='AmpOptimWrapper'" in text
    assert ("dtype='bfloat16'" in text) == (amp == 'bf16')


def test_dist_train_on_one_gpu(imagenet, tmp_path):
    work = str(tmp_path / 'work')
    out = ok(run_tool(['env', f'PORT={free_port()}', 'bash',
                        osp.join(ROOT, 'tools/dist_train.sh'), cls_config(tmp_path, 'deit'),
                        '1', '--work-dir', work, '--amp', '--cfg-options',
                        *datagen.tiny_cls_options(imagenet, batch_size=4)]))
    assert 'Distributed training: True' in out
    assert re.search(r'GPU 0[,:]', out), out[-3000:]  # the environment report lists the GPU
    assert "backend='gloo'" not in out  # not the CPU fallback
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


def test_mask_rcnn_trains_on_gpu(coco, tmp_path):
    config = write_config(tmp_path / 'det.py', DET_TINY, base=DET_SWIN, data_root=coco, ckpt=None,
                    prefix=None)
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work,
                        '--no-validate', '--cfg-options', 'model.backbone.init_cfg=None']))
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\].*loss_mask', out), out[-3000:]
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


def test_upernet_trains_on_gpu(ade20k, tmp_path):
    config = write_config(tmp_path / 'seg.py', SEG_TINY, base=SEG_SWIN, data_root=ade20k, ckpt=None,
                    prefix=None)
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work,
                        '--no-validate', '--cfg-options', 'model.backbone.init_cfg=None']))
    assert re.search(r'Iter\(train\) \[2/2\].*decode\.loss_ce', out), out[-3000:]
    assert osp.isfile(osp.join(work, 'iter_2.pth'))


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16', 'bf16'])
def test_vit_matches_upstream_on_cuda(dtype):
    """Features bit-identical to mmpretrain's ViT, gradients equal (CUDA's attention backward
    may add in any order: to float rounding), autograd saves the same bytes (ratio 1.000)."""
    parent, aligned = make_vit_pair('deit-small', 'cls_token')
    parent.cuda().train()
    aligned.cuda().train()
    x = torch.randn(8, 3, 224, 224, device='cuda')
    token_share = vit_grid_share(8, (14, 14), 0).cuda()
    amp = torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32)

    torch.manual_seed(1)
    with amp:
        ref, ref_bytes = saved_bytes(lambda: parent(x))
    ref[-1].float().square().sum().backward()
    torch.manual_seed(1)
    with amp:
        (outs, share), got_bytes = saved_bytes(lambda: aligned.forward_aligned(x, token_share))
    outs[-1].float().square().sum().backward()

    assert torch.equal(outs[-1], ref[-1])
    assert got_bytes == ref_bytes
    # the same kernels run on the same inputs; CUDA's attention backward accumulates with
    # atomics, so only the summation order may differ
    rtol, atol = (1e-4, 1e-6) if dtype == torch.float32 else (2e-2, 1e-4)
    for (name, p), a in zip(parent.named_parameters(), aligned.parameters()):
        torch.testing.assert_close(a.grad, p.grad, rtol=rtol, atol=atol, msg=name)
    # the traced share is float32 and follows the CPU float32 trace (under autocast, through
    # the half-precision attention of these sharpened weights)
    assert share.dtype == torch.float32
    with torch.no_grad():
        _, cpu_share = aligned.cpu().forward_aligned(x.cpu(), token_share.cpu())
    # (measured on CPU for these weights: 1.5e-4 under fp16 and 8e-4 under bf16 autocast,
    # against a share that moves 1.3e-2 away from the area share)
    tol = {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 4e-3}[dtype]
    torch.testing.assert_close(share.cpu(), cpu_share, atol=tol, rtol=0)
    if dtype == torch.float32:
        assert (cpu_share - token_share.cpu().mean(dim=1)).abs().max() > 10 * tol


def test_share_attention_on_cuda_uses_the_separate_path():
    from mmtlalign.models import alignment
    assert alignment.resolve_share_attention('cuda') == 'separate'
    q, k, v = (torch.randn(2, 6, 197, 64, device='cuda', dtype=torch.float16,
                           requires_grad=True) for _ in range(3))
    share = torch.rand(2, 197, device='cuda')
    out, attended = alignment.attention_with_share(q, k, v, share)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    attn = torch.softmax(q.float() @ k.float().transpose(-2, -1) / 8, dim=-1).mean(1)
    torch.testing.assert_close(attended, attn @ share, atol=2e-3, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_experimental_cuda_flash_path(dtype):
    """The opt-in 'cuda_flash' path: upstream's features and gradients to the half type's
    rounding (other kernel tiles for the 72-wide head dim), the bytes upstream's call saves,
    and the traced share."""
    from mmtlalign.models import alignment
    g = torch.Generator(device='cuda').manual_seed(0)
    q, k, v = (torch.randn(4, 6, 197, 64, device='cuda', generator=g).to(dtype)
               .requires_grad_() for _ in range(3))
    share = torch.rand(4, 197, device='cuda', generator=g)
    ref, ref_bytes = saved_bytes(lambda: F.scaled_dot_product_attention(q, k, v))
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    with alignment.share_attention_impl('cuda_flash'):
        (out, attended), got_bytes = saved_bytes(
            lambda: alignment.attention_with_share(q, k, v, share))
    grads = torch.autograd.grad(out, (q, k, v), grad)
    assert got_bytes == ref_bytes
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
    attn = torch.softmax(q.float() @ k.float().transpose(-2, -1) / 8, dim=-1).mean(1)
    torch.testing.assert_close(attended, attn @ share, atol=4e-3, rtol=0)


# ----------------------------------------------------------------------------- mmcv ops
def test_mmcv_cuda_ops_nms_and_roi_align():
    from mmcv.ops import RoIAlign, nms
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(200, 2, generator=g) * 40], dim=1)
    scores = torch.rand(200, generator=g)
    dets_cpu, keep_cpu = nms(boxes, scores, 0.5)
    dets_gpu, keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
    assert keep_gpu.is_cuda and torch.equal(keep_gpu.cpu(), keep_cpu)
    torch.testing.assert_close(dets_gpu.cpu(), dets_cpu)

    feats = torch.randn(2, 8, 32, 32, generator=g)
    rois = torch.tensor([[0, 1.5, 2.0, 20.0, 25.5], [1, 0.0, 0.0, 31.0, 31.0],
                         [0, 10.2, 5.1, 12.3, 30.0]])
    align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    out_cpu = align(feats, rois)
    feats_gpu = feats.cuda().requires_grad_()
    out_gpu = align(feats_gpu, rois.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
    out_gpu.sum().backward()
    assert feats_gpu.grad.abs().sum() > 0
