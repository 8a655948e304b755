"""Downstream use of TL-Align backbones: mmseg (ADE20K, UperNet) and mmdet (COCO, Mask R-CNN).

* converters: timm ViT/DeiT and Swin weights -> mmpretrain give timm's own features and logits;
  classifier -> backbone-only checkpoints;
* every ADE20K / COCO config in configs/ builds, takes a TL-Align classifier checkpoint with no
  missing or unexpected backbone keys, and runs inference on CPU on generated data;
* clear errors: a checkpoint that does not fit, a missing dataset root, mmcv without CUDA ops;
* (slow) the chain on real files: tiny TL-Align classifier training (tools/train.py) ->
  checkpoint -> mmseg / mmdet training and evaluation with IoUMetric / CocoMetric through
  tools/train.py and tools/test.py.
"""
import argparse
import copy
import glob
import importlib.util
import json
import os.path as osp
import re
import sys

import pytest
import torch

import datagen
from datagen import DET_TINY, SEG_TINY
from helpers import ok, run_tool, write_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
CONFIGS = osp.join(ROOT, 'configs')
DOWNSTREAM_CONFIGS = sorted(
    p for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True)
    if re.search(r'(ade20k|coco)', osp.basename(p)))
DEIT_CLS = osp.join(CONFIGS, 'tlalign', 'deit-s_8xb128.py')
SWIN_CLS = osp.join(CONFIGS, 'tlalign', 'swin-t_16xb64.py')
SEG_DEIT = osp.join(CONFIGS, 'tlalign', 'ade20k',
                    'upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py')
SEG_SWIN = osp.join(CONFIGS, 'tlalign', 'ade20k',
                    'upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py')
DET_DEIT = osp.join(CONFIGS, 'tlalign', 'coco', 'mask-rcnn_tlalign-deit-s_simplefpn_1x_coco.py')
DET_SWIN = osp.join(CONFIGS, 'tlalign', 'coco', 'mask-rcnn_tlalign-swin-t_fpn_1x_coco.py')


def _tool(name):
    """Import tools/model_converters/<name>.py as a module (the CLI, run in-process)."""
    path = osp.join(ROOT, 'tools', 'model_converters', name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scope(scope):
    from mmengine.registry import init_default_scope

    import mmtlalign  # noqa: F401
    init_default_scope(scope)


def _build(cfg_model, scope):
    _scope(scope)
    from mmengine.registry import MODELS
    return MODELS.build(copy.deepcopy(cfg_model))


def _config(path):
    from mmengine.config import Config

    import mmtlalign  # noqa: F401
    return Config.fromfile(path)


def _random_timm(name):
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for p in model.parameters():  # beyond the init: LayerNorms and biases not trivial
            p.normal_(0, 0.05)
    return model.eval()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    return datagen.make_ade20k(str(tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016'))


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return datagen.make_coco(str(tmp_path_factory.mktemp('coco') / 'coco'))


@pytest.fixture(scope='module')
def classifier_ckpts(tmp_path_factory):
    """Untrained TL-Align DeiT-S and Swin-T classifiers from their configs, saved like
    mmengine checkpoints: {'vit': path, 'swin': path}."""
    out = {}
    tmp = tmp_path_factory.mktemp('cls')
    for arch, path in (('vit', DEIT_CLS), ('swin', SWIN_CLS)):
        model = _build(_config(path).model, 'mmpretrain')
        file = str(tmp / f'{arch}.pth')
        torch.save({'meta': {'from': osp.basename(path)}, 'state_dict': model.state_dict()}, file)
        out[arch] = file
    return out


# ----------------------------------------------------------------------------- converters
def test_timm_vit_to_mmpretrain_matches_timm(tmp_path):
    """Official TL-Align/DeiT format (timm VisionTransformer, {'model', 'args'} wrapper) ->
    the CLI -> TL-Align DeiT-S classifier: same features and logits as timm."""
    timm_model = _random_timm('deit_small_patch16_224')
    src, dst = str(tmp_path / 'tla_deit_small.pth'), str(tmp_path / 'mm.pth')
    torch.save({'model': timm_model.state_dict(), 'epoch': 299,
                'args': argparse.Namespace(model='deit_small_patch16_224', tl_align=True)}, src)
    _tool('timm_to_mmpretrain').main([src, dst])

    cfg = _config(DEIT_CLS)
    cfg.model.backbone.drop_path_rate = 0.
    model = _build(cfg.model, 'mmpretrain').eval()
    ckpt = torch.load(dst, map_location='cpu')
    result = model.load_state_dict(ckpt['state_dict'], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = timm_model.forward_features(x)
        torch.testing.assert_close(model.backbone(x)[0], timm_model.forward_head(
            feats, pre_logits=True), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, mode='tensor'), timm_model(x), atol=1e-5, rtol=1e-5)


def _official_swin_layout(timm_model):
    """timm 1.0 Swin state dict -> the official Swin release layout: patch merging at the end
    of the previous stage, saved relative_position_index and attn_mask buffers, head.weight."""
    sd = {}
    for k, v in timm_model.state_dict().items():
        m = re.match(r'layers\.(\d+)\.downsample\.(.*)', k)
        if m:
            k = f'layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}'
        sd[k.replace('head.fc.', 'head.')] = v
    for k, v in timm_model.named_buffers():
        if k.endswith(('relative_position_index', 'attn_mask')):
            sd[k] = v
    return sd


@pytest.mark.parametrize('layout', ['timm-1.0', 'official'])
def test_timm_swin_to_mmpretrain_matches_timm(layout, tmp_path):
    from mmtlalign.checkpoint import convert as converters
    timm_model = _random_timm('swin_tiny_patch4_window7_224')
    sd = timm_model.state_dict() if layout == 'timm-1.0' else _official_swin_layout(timm_model)
    if layout == 'timm-1.0':
        assert not any('relative_position_index' in k for k in sd)  # timm does not save it
    out, arch, _ = converters.timm_to_mmpretrain(sd)
    assert arch == 'swin'

    cfg = _config(SWIN_CLS)
    cfg.model.backbone.drop_path_rate = 0.
    model = _build(cfg.model, 'mmpretrain').eval()
    result = model.load_state_dict(out, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    reference = model.backbone.state_dict()
    for k in reference:  # the rebuilt index is mmpretrain's own
        if k.endswith('relative_position_index'):
            assert torch.equal(out['backbone.' + k], reference[k]), k
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = timm_model.forward_features(x).permute(0, 3, 1, 2)
        torch.testing.assert_close(model.backbone(x)[-1], feats, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, mode='tensor'), timm_model(x), atol=1e-5, rtol=1e-5)


def test_timm_backbone_only_and_conversion_errors(tmp_path):
    from mmpretrain.models import VisionTransformer

    from mmtlalign.checkpoint import convert as converters
    timm_sd = _random_timm('deit_tiny_patch16_224').state_dict()
    backbone, arch, _ = converters.timm_to_mmpretrain(timm_sd, backbone_only=True)
    vit = VisionTransformer(arch='deit-tiny')
    assert set(backbone) == set(vit.state_dict())

    with pytest.raises(converters.ConversionError, match='already look like mmpretrain keys'):
        converters.timm_to_mmpretrain({'backbone.' + k: v for k, v in vit.state_dict().items()})
    with pytest.raises(converters.ConversionError, match='distilled'):
        converters.timm_to_mmpretrain(dict(timm_sd, dist_token=torch.zeros(1, 1, 192)))
    with pytest.raises(converters.ConversionError, match=r"blocks\.0\.ls1\.gamma"):
        converters.timm_to_mmpretrain(dict(timm_sd, **{'blocks.0.ls1.gamma': torch.ones(192)}))
    with pytest.raises(converters.ConversionError, match='--arch swin given'):
        converters.timm_to_mmpretrain(timm_sd, arch='swin')
    # the CLI: clear one-line errors
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'foo.weight': torch.zeros(2)}}, bad)
    with pytest.raises(SystemExit, match='not a timm ViT/DeiT or Swin'):
        _tool('timm_to_mmpretrain').main([bad, str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit, match='does not exist'):
        _tool('timm_to_mmpretrain').main([str(tmp_path / 'nope.pth'), str(tmp_path / 'o.pth')])


def test_cls_to_backbone(classifier_ckpts, tmp_path):
    dst = str(tmp_path / 'backbone.pth')
    _tool('cls_to_backbone').main([classifier_ckpts['swin'], dst])
    out = torch.load(dst, map_location='cpu')
    src = torch.load(classifier_ckpts['swin'], map_location='cpu')['state_dict']
    assert 'from' not in out['meta']  # meta we do not understand is not copied
    assert 'cls_to_backbone' in out['meta']['mmtlalign_converted']
    assert set(out['state_dict']) == {k[len('backbone.'):] for k in src
                                      if k.startswith('backbone.')}
    assert all(torch.equal(v, src['backbone.' + k]) for k, v in out['state_dict'].items())
    # module versions kept (Swin's loader converts legacy keys on version < 3)
    assert out['state_dict']._metadata['']['version'] == 3
    with pytest.raises(SystemExit, match='backbone-only checkpoint'):
        _tool('cls_to_backbone').main([dst, str(tmp_path / 'again.pth')])


# ----------------------------------------------------------------------------- neck
def test_simple_feature_pyramid():
    _scope('mmdet')
    from mmdet.registry import MODELS
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=48, out_channels=32))
    outs = neck((torch.randn(2, 48, 6, 10), ))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 24, 40), (2, 32, 12, 20), (2, 32, 6, 10),
                                              (2, 32, 3, 5), (2, 32, 2, 3)]
    with pytest.raises(ValueError, match="out_type='featmap'"):
        neck((torch.randn(2, 48), ))


# ----------------------------------------------------------------------------- every config
def _shrink(pipeline, scale):
    pipeline = copy.deepcopy(pipeline)

    def visit(t):
        if isinstance(t, dict):
            if t.get('type') == 'Resize' and 'scale' in t:
                t['scale'] = scale
            for v in t.values():
                visit(v)
        elif isinstance(t, list):
            for v in t:
                visit(v)

    visit(pipeline)
    return pipeline


def test_downstream_configs_found():
    names = {osp.basename(p) for p in DOWNSTREAM_CONFIGS}
    assert {osp.basename(p) for p in (SEG_DEIT, SEG_SWIN, DET_DEIT, DET_SWIN)} <= names
    assert any(n.endswith('_ms.py') and 'ade20k' in n for n in names)
    assert any('3x' in n for n in names)


@pytest.mark.parametrize('config', DOWNSTREAM_CONFIGS, ids=osp.basename)
def test_config_builds_fits_and_infers(config, ade20k, coco, classifier_ckpts):
    """Build the model, load a TL-Align classifier checkpoint into its backbone (no missing or
    unexpected keys), run inference on a generated image through the config's own test
    dataset and pipeline (scaled down)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DATASETS

    from mmtlalign.engine.downstream_checks import backbone_load_report
    cfg = _config(config)
    scope = cfg.default_scope
    assert scope in ('mmseg', 'mmdet')
    ours = osp.basename(osp.dirname(config)) in ('ade20k', 'coco')
    if ours:
        assert {h['type'] for h in cfg.custom_hooks} == {'DownstreamChecksHook'}
    model = revert_sync_batchnorm(_build(cfg.model, scope)).eval()
    inner = getattr(model, 'module', model)  # SegTTAModel wraps the segmentor
    backbone = inner.backbone
    init_cfg = backbone.init_cfg
    name = type(backbone).__name__
    arch = 'swin' if 'Swin' in name else 'vit' if 'VisionTransformer' in name else None
    if ours:
        assert arch and init_cfg['type'] == 'Pretrained' and init_cfg['prefix'] == 'backbone.'
    if arch and isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        report = backbone_load_report(backbone, classifier_ckpts[arch],
                                      prefix=init_cfg.get('prefix'))
        assert report.ok, report.summary()
        assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
        if arch == 'swin':  # the extra feature levels' norms start fresh, as upstream
            assert report.new_output_norms == [f'norm{i}.{p}' for i in range(3)
                                               for p in ('weight', 'bias')]
        else:
            assert report.new_output_norms == []

    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.data_root = ade20k if scope == 'mmseg' else coco
    ds_cfg.pipeline = _shrink(ds_cfg.pipeline, (128, 64) if scope == 'mmseg' else (160, 128))
    dataset = DATASETS.build(ds_cfg)
    batch = pseudo_collate([dataset[0]])
    with torch.no_grad():
        out = model.test_step(batch)
    assert len(out) == 1
    if scope == 'mmseg':
        pred = out[0].pred_sem_seg.data
        assert tuple(pred.shape[-2:]) == tuple(out[0].ori_shape)
        assert int(pred.max()) < 150
    else:
        inst = out[0].pred_instances
        assert inst.bboxes.shape[-1] == 4 and 'masks' in inst


# ----------------------------------------------------------------------------- clear errors
@pytest.fixture(scope='module')
def vit_backbone():
    cfg = _config(SEG_DEIT)
    return _build(cfg.model.backbone, 'mmseg')


def _save(path, sd):
    torch.save({'state_dict': sd}, path)
    return str(path)


def test_mismatched_checkpoint_errors(vit_backbone, classifier_ckpts, tmp_path):
    from mmpretrain.models import VisionTransformer

    from mmtlalign.cli.launch import UserInputError
    from mmtlalign.engine.downstream_checks import DownstreamCheckError, check_pretrained_backbone
    assert issubclass(DownstreamCheckError, UserInputError)
    check = check_pretrained_backbone
    cls = classifier_ckpts['vit']
    assert check(vit_backbone, cls, 'backbone.').ok

    # timm weights, not converted
    timm_file = _save(tmp_path / 'timm.pth', _random_timm('deit_small_patch16_224').state_dict())
    with pytest.raises(DownstreamCheckError) as e:
        check(vit_backbone, timm_file, 'backbone.')
    assert 'timm_to_mmpretrain.py' in str(e.value) and 'patch_embed.proj.weight' in str(e.value)
    # a backbone-only checkpoint with prefix='backbone.'
    bb = str(tmp_path / 'bb.pth')
    _tool('cls_to_backbone').main([cls, bb])
    assert check(vit_backbone, bb, None).ok
    with pytest.raises(DownstreamCheckError, match="no 'backbone.' keys.*without a prefix"):
        check(vit_backbone, bb, 'backbone.')
    # a whole classifier without the prefix: names the unexpected/missing keys and the fix
    with pytest.raises(DownstreamCheckError) as e:
        check(vit_backbone, cls, None)
    msg = str(e.value)
    assert 'unexpected: backbone.' in msg and 'missing: ' in msg
    assert "prefix='backbone.'" in msg and 'cls_to_backbone.py' in msg
    # another architecture: Swin into the ViT
    with pytest.raises(DownstreamCheckError, match='Swin but the backbone is a ViT'):
        check(vit_backbone, classifier_ckpts['swin'], 'backbone.')
    # another size: DeiT-T into DeiT-S
    tiny = VisionTransformer(arch='deit-tiny').state_dict()
    tiny_file = _save(tmp_path / 'tiny.pth', {'backbone.' + k: v for k, v in tiny.items()})
    with pytest.raises(DownstreamCheckError) as e:
        check(vit_backbone, tiny_file, 'backbone.')
    assert 'shape mismatch: cls_token (1, 1, 192) vs (1, 1, 384)' in str(e.value)
    assert 'layers.0.ln1.weight (192,) vs (384,)' in str(e.value)
    assert 'another architecture or size' in str(e.value)
    # a missing file
    with pytest.raises(DownstreamCheckError, match='does not exist.*init_cfg.checkpoint'):
        check(vit_backbone, str(tmp_path / 'nope.pth'), 'backbone.')


def test_hook_checks_before_training_only(vit_backbone, classifier_ckpts, tmp_path):
    from mmengine.logging import MMLogger
    from mmengine.runner import BaseLoop

    from mmtlalign.engine.downstream_checks import DownstreamCheckError, DownstreamChecksHook

    class Loop(BaseLoop):
        def run(self):
            pass

    class Model(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    class Runner:
        def __init__(self, model, training):
            self.model = model
            self._train_loop = object.__new__(Loop) if training else None
            self.logger = MMLogger.get_instance('test_downstream')

    backbone = copy.deepcopy(vit_backbone)
    backbone.init_cfg = dict(type='Pretrained', checkpoint=classifier_ckpts['swin'],
                             prefix='backbone.')
    hook = DownstreamChecksHook()
    hook.before_run(Runner(Model(backbone), training=False))  # test runs load no pretrained
    with pytest.raises(DownstreamCheckError, match='does not fit AlignedVisionTransformer'):
        hook.before_run(Runner(Model(backbone), training=True))
    backbone.init_cfg['checkpoint'] = classifier_ckpts['vit']
    hook.before_run(Runner(Model(backbone), training=True))


@pytest.mark.parametrize('config', DOWNSTREAM_CONFIGS, ids=osp.basename)
def test_missing_dataset_root(config, tmp_path, monkeypatch):
    """The upstream dataset configs hit tools/train.py's and tools/test.py's data-root check."""
    from mmtlalign.cli import launch
    monkeypatch.chdir(tmp_path)  # the configs' relative data/ade, data/coco do not exist here
    cfg = launch.load_config(config)
    loaders = ['test_dataloader'] if config.endswith('_ms.py') else ['train_dataloader',
                                                                      'val_dataloader']
    with pytest.raises(launch.UserInputError, match=r'dataset folder .*data_root\) does not'):
        launch.check_data_roots(cfg, loaders)


def test_mmcv_without_cuda_ops_on_gpu(monkeypatch):
    from mmtlalign.engine import downstream_checks as dc
    real = dc._compiling_cuda_version()
    assert isinstance(real, str)  # this machine's mmcv has compiled ops
    dc.check_mmcv_cuda_ops(on_gpu=False)  # a CPU run never needs them
    monkeypatch.setattr(dc, '_compiling_cuda_version', lambda: 'not available')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(dc.DownstreamCheckError) as e:
        dc.check_mmcv_cuda_ops()  # on_gpu defaults to torch.cuda.is_available()
    msg = str(e.value)
    assert 'compiled without CUDA ops' in msg
    assert 'FORCE_CUDA=1 bash tools/setup_env.sh' in msg
    assert dc.rebuild_hint() in msg and '.mmtlalign-setup' in msg  # see test_setup_env.py
    monkeypatch.setattr(dc, '_compiling_cuda_version', lambda: None)
    with pytest.raises(dc.DownstreamCheckError, match='no compiled ops at all'):
        dc.check_mmcv_cuda_ops(on_gpu=True)
    monkeypatch.setattr(dc, '_compiling_cuda_version', lambda: '12.1')
    dc.check_mmcv_cuda_ops(on_gpu=True)


# ----------------------------------------------------------------------------- the chain




CLS_TINY = datagen.TINY_64PX_PIPELINES + """
_base_ = {base!r}
model = dict(backbone=dict({backbone}))
default_hooks = dict(checkpoint=dict(save_optimizer=False))
randomness = dict(seed=0)
"""


# the real multi-scale + flip test config, on the generated folder
SEG_MS_TINY = """
_base_ = {base!r}
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}))
"""


def _train_classifier(tmp, base, backbone, imagenet):
    config = write_config(tmp / 'cls.py', CLS_TINY, base=base, backbone=backbone)
    work = str(tmp / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work,
                        '--cfg-options', *datagen.tiny_cls_options(imagenet, batch_size=4)]))
    assert 'token_fluctuation' in out  # the TL-Align loss ran
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    return ckpt


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return datagen.make_imagenet(str(tmp_path_factory.mktemp('imagenet')), per_class=2)


@pytest.fixture(scope='module')
def trained_deit(tmp_path_factory, imagenet):
    """A TL-Align DeiT-S classifier trained for one tiny epoch through tools/train.py."""
    return _train_classifier(tmp_path_factory.mktemp('deit'), DEIT_CLS, '', imagenet)


@pytest.fixture(scope='module')
def trained_swin(tmp_path_factory, imagenet):
    """A TL-Align Swin-T classifier trained for one tiny epoch (64 px: pad_small_map)."""
    return _train_classifier(tmp_path_factory.mktemp('swin'), SWIN_CLS,
                             'pad_small_map=True', imagenet)


def _scalars(work_dir):
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    with open(files[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def _assert_clean_backbone_load(out, new_norms=False):
    """The hook's report and mmengine's own load messages for the backbone."""
    report = re.search(r'backbone checkpoint .*', out)
    assert report, out[-3000:]
    assert 'missing: none, unexpected: none' in report.group(0)
    assert ('new output norms' in report.group(0)) == new_norms
    assert 'unexpected key in source state_dict' not in out
    missing = re.findall(r'missing keys in source state_dict: (.*)', out)
    if new_norms:  # mmengine's load warning lists exactly the fresh output norms
        assert missing and set(missing[0].strip().split(', ')) == {
            f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}
    else:
        assert not missing


@pytest.mark.slow
def test_chain_deit_ade20k(trained_deit, ade20k, tmp_path):
    """TL-Align DeiT-S classifier checkpoint (prefix 'backbone.') -> UperNet + MultiLevelNeck:
    train 2 iterations, validate (IoUMetric), test multi-scale + flip via tools/test.py."""
    config = write_config(tmp_path / 'seg.py', SEG_TINY, base=SEG_DEIT, data_root=ade20k,
                    ckpt=trained_deit, prefix='backbone.')
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work]))
    _assert_clean_backbone_load(out)
    assert 'Resize the pos_embed shape from torch.Size([1, 197, 384])' in out
    val = [s for s in _scalars(work) if 'mIoU' in s]
    assert val and 0 <= val[-1]['mIoU'] <= 100
    ckpt = osp.join(work, 'iter_2.pth')
    ms = write_config(tmp_path / 'seg_ms.py', SEG_MS_TINY, base=SEG_DEIT.replace('.py', '_ms.py'),
                data_root=ade20k)
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/test.py'), ms, ckpt,
                        '--work-dir', str(tmp_path / 'test')]))
    assert re.search(r'mIoU: \d', out), out[-2000:]


@pytest.mark.slow
def test_chain_swin_ade20k(trained_swin, ade20k, tmp_path):
    config = write_config(tmp_path / 'seg.py', SEG_TINY, base=SEG_SWIN, data_root=ade20k,
                    ckpt=trained_swin, prefix='backbone.')
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work]))
    _assert_clean_backbone_load(out, new_norms=True)
    assert [s for s in _scalars(work) if 'mIoU' in s]


@pytest.mark.slow
def test_chain_deit_coco(trained_deit, coco, tmp_path):
    """Classifier -> cls_to_backbone.py -> backbone-only checkpoint (no prefix) -> Mask R-CNN
    with SimpleFeaturePyramid: train one tiny epoch + CocoMetric, then tools/test.py."""
    backbone = str(tmp_path / 'deit_backbone.pth')
    ok(run_tool([PY, osp.join(ROOT, 'tools/model_converters/cls_to_backbone.py'),
                  trained_deit, backbone]))
    config = write_config(tmp_path / 'det.py', DET_TINY, base=DET_DEIT, data_root=coco,
                    ckpt=backbone, prefix=None)
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work]))
    _assert_clean_backbone_load(out)
    val = [s for s in _scalars(work) if 'coco/bbox_mAP' in s]
    assert val and 'coco/segm_mAP' in val[-1]
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/test.py'), config,
                        osp.join(work, 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test')]))
    assert re.search(r'coco/bbox_mAP: [\d.]+', out) and re.search(r'coco/segm_mAP: [\d.]+', out)


@pytest.mark.slow
def test_chain_swin_coco(trained_swin, coco, tmp_path):
    config = write_config(tmp_path / 'det.py', DET_TINY, base=DET_SWIN, data_root=coco,
                    ckpt=trained_swin, prefix='backbone.')
    work = str(tmp_path / 'work')
    out = ok(run_tool([PY, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work]))
    _assert_clean_backbone_load(out, new_norms=True)
    val = [s for s in _scalars(work) if 'coco/bbox_mAP' in s]
    assert val and 'coco/segm_mAP' in val[-1]


@pytest.mark.slow
def test_wrong_checkpoint_fails_before_training(coco, tmp_path):
    """tools/train.py with unconverted timm weights: fails before any iteration, naming the
    keys and the converter."""
    timm_file = _save(tmp_path / 'timm.pth', _random_timm('deit_small_patch16_224').state_dict())
    config = write_config(tmp_path / 'det.py', DET_TINY, base=DET_DEIT, data_root=coco,
                    ckpt=timm_file, prefix='backbone.')
    result = run_tool([PY, osp.join(ROOT, 'tools/train.py'), config,
                       '--work-dir', str(tmp_path / 'work')])
    assert result.returncode != 0
    err = result.stderr
    assert 'error: the pretrained checkpoint does not fit' in err, err[-3000:]
    assert 'timm_to_mmpretrain.py' in err and 'Traceback' not in err, err[-3000:]
    assert 'Iter(train)' not in result.stdout + err
