"""What an OpenMMLab newcomer expects (issue 22), through the real tools and mmengine's Runner:

* ``tools/test.py --show-dir / --show / --wait-time / --interval / --tta`` with the meaning of the
  config's task (mmpretrain here; mmdet in the slow tier);
* a COCO json whose categories do not match the classes in effect (the dataset's default
  included), a json without images, annotations of unknown categories: one-line errors before
  any training;
* a smoke run shorter than the warm-up trains (the warm-up shrinks, with a warning saying by how
  much); a learning rate below ``eta_min`` is reported;
* ``_base_ = 'mmtlalign::...'`` in a config of the user's own project, run from outside the repo;
* ``python -m mmtlalign``; no ``pkg_resources`` deprecation warning in the tools' output;
* the repository's metafile and model index.
"""
import glob
import json
import os
import os.path as osp
import pickle
import re

import pytest
import torch
from PIL import Image

import datagen
from helpers import PY, ROOT, ok, run_tool

TEST_TOOL = osp.join(ROOT, 'tools', 'test.py')
TRAIN_TOOL = osp.join(ROOT, 'tools', 'train.py')
COCO_CONFIG = osp.join(ROOT, 'configs/tlalign/coco/mask-rcnn_tlalign-swin-t_fpn_1x_coco.py')

# A config of the user's own project: our DeiT-S recipe as the base, by scope, shrunk to a
# 2-block 48-dim DeiT at 64 px on 4 classes.
USER_CONFIG = datagen.TINY_64PX_PIPELINES + """
_base_ = '{base}'
model = dict(backbone=dict(img_size=64, patch_size=16,
                           arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=3,
                                     feedforward_channels=96)),
             head=dict(in_channels=48, num_classes=4))
randomness = dict(seed=0)
"""


def _errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith('error:')]


def _one_line_error(result):
    assert result.returncode == 1, result.stderr[-3000:]
    errors = _errors(result)
    assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert 'Iter(train)' not in result.stdout + result.stderr
    return errors[0]


def _smoke_options(data_root):
    """The tiny-run options *without* the scheduler fix the other tests apply: the recipe's
    5-epoch warm-up meets a 1-epoch run, as in a newcomer's smoke test."""
    return [o for o in datagen.tiny_cls_options(data_root, img_size=64)
            if not o.startswith('param_scheduler')]


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return datagen.make_imagenet(str(tmp_path_factory.mktemp('imagenet')), per_class=2)


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A user's project folder outside the repository, with a config inheriting ours by scope."""
    folder = tmp_path_factory.mktemp('my_project')
    (folder / 'my_deit.py').write_text(
        USER_CONFIG.format(base='mmtlalign::tlalign/deit-s_8xb128.py'))
    return folder


@pytest.fixture(scope='module')
def smoke_run(project, imagenet):
    """``tools/train.py my_deit.py --cfg-options train_cfg.max_epochs=1 ...`` from the user's
    project folder: a 1-epoch run of a recipe with a 5-epoch warm-up."""
    work_dir = str(project / 'work_dirs' / 'smoke')
    result = run_tool([PY, TRAIN_TOOL, 'my_deit.py', '--work-dir', work_dir,
                       '--cfg-options', *_smoke_options(imagenet)], cwd=str(project))
    return result, work_dir


# ----------------------------------------------------------------------------- item 4
@pytest.mark.slow
def test_smoke_run_shorter_than_warmup_trains_with_a_warning(smoke_run):
    result, work_dir = smoke_run
    out = ok(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith('warning:')]
    shrink = [w for w in warnings if 'warm-up' in w]
    assert len(shrink) == 1, result.stderr[-3000:]
    assert ('train_cfg.max_epochs=1 does not outlast the 5-epoch warm-up: the warm-up is '
            'shrunk by 4 epochs, from 5 to 1' in shrink[0]), shrink[0]
    assert 'param_scheduler.0.end=1 param_scheduler.1.begin=1' in shrink[0]
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    # the warm-up now spans the run: the lr rises every iteration, up to the scaled peak
    scalars = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    lrs = [json.loads(line)['lr'] for line in open(scalars[0]) if '"lr"' in line]
    assert len(lrs) == 2 and lrs[0] < lrs[1], lrs
    assert 'accuracy/top1' in out
    assert 'pkg_resources is deprecated' not in out  # no setuptools deprecation noise


@pytest.mark.slow
def test_auto_scale_lr_below_eta_min_warns(smoke_run):
    result, _ = smoke_run
    ok(result)
    eta = [line for line in result.stderr.splitlines()
           if line.startswith('warning:') and 'eta_min' in line]
    assert len(eta) == 1, result.stderr[-3000:]
    # the tiny run: 1 process x 4 images, base 1024 -> lr 1e-3 * 4/1024 below eta_min 1e-5
    assert ('auto_scale_lr scales the learning rate by 1 x 4 / 1024 = 0.00390625, from 0.001 '
            'to 3.90625e-06, below param_scheduler[1] (CosineAnnealingLR) eta_min=1e-05'
            in eta[0]), eta[0]
    assert 'param_scheduler.1.eta_min=3.90625e-08' in eta[0]


def _recipe(**options):
    from mmengine.config import Config

    import mmtlalign  # noqa: F401  (the mmtlalign:: scope, the registries)
    cfg = Config.fromfile(osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py'))
    cfg.merge_from_dict(options)
    return cfg


def test_the_users_own_warmup_fix_is_accepted_without_warning():
    """The fix the old refusal suggested: end the warm-up at the end of a 1-epoch run. mmengine
    would give the cosine end = 1 = its begin (ValueError); it gets an end after the run."""
    from mmtlalign.cli import launch
    cfg = _recipe(**{'train_cfg.max_epochs': 1, 'param_scheduler.0.end': 1,
                     'param_scheduler.1.begin': 1, 'auto_scale_lr.enable': False})
    assert launch.check_schedule(cfg) == []
    assert [(s.begin, s.end) for s in cfg.param_scheduler] == [(0, 1), (1, 2)]


def test_iteration_based_warmup_shrinks_to_half_the_run():
    """mmseg's ADE20K recipe: 1500 warm-up iterations; a 10-iteration run warms up for 5."""
    from mmengine.config import Config

    from mmtlalign.cli import launch
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py'))
    cfg.train_cfg.max_iters = 10
    notes = launch.check_schedule(cfg)
    assert len(notes) == 1 and 'shrunk by 1495 iterations, from 1500 to 5' in notes[0], notes
    assert [(s.begin, s.end) for s in cfg.param_scheduler] == [(0, 5), (5, 160000)]


def test_long_enough_run_and_explicit_bad_scheduler():
    from mmtlalign.cli import launch
    cfg = _recipe(**{'auto_scale_lr.enable': False})
    before = [dict(s) for s in cfg.param_scheduler]
    assert launch.check_schedule(cfg) == [] and [dict(s) for s in cfg.param_scheduler] == before
    cfg = _recipe(**{'param_scheduler.0.end': 0})
    with pytest.raises(launch.UserInputError, match=r'param_scheduler\[0\] \(LinearLR\) ends at '
                                                    r'0, not after it begins \(0\)'):
        launch.check_schedule(cfg)


# ----------------------------------------------------------------------------- item 5
@pytest.mark.slow
def test_scope_base_from_outside_the_repo(smoke_run, project):
    """The smoke run above read ``_base_ = 'mmtlalign::tlalign/deit-s_8xb128.py'`` from a folder
    outside the repository and trained our recipe (TL-Align classifier, its hooks)."""
    result, work_dir = smoke_run
    out = ok(result)
    assert not osp.realpath(str(project)).startswith(osp.realpath(ROOT) + os.sep)
    assert 'token_fluctuation' in out  # TL-Align's classifier ran
    dumped = glob.glob(osp.join(work_dir, '*', 'vis_data', 'config.py')) + glob.glob(
        osp.join(work_dir, 'my_deit.py'))
    text = open(dumped[0]).read()
    assert "type='TLAlignClassifier'" in text and 'AtomicCheckpointHook' in text


def test_scope_base_equals_the_path_and_takes_bare_names(tmp_path):
    from mmengine.config import Config

    import mmtlalign  # noqa: F401
    by_path = tmp_path / 'by_path.py'
    by_path.write_text(f"_base_ = {osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py')!r}\n")
    expected = Config.fromfile(str(by_path)).to_dict()
    for base in ('mmtlalign::tlalign/deit-s_8xb128.py', 'mmtlalign::deit-s_8xb128.py'):
        cfg = tmp_path / 'scoped.py'
        cfg.write_text(f'_base_ = {base!r}\n')
        assert Config.fromfile(str(cfg)).to_dict() == expected, base
    # upstream scopes are untouched
    cfg.write_text("_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'\n")
    assert Config.fromfile(str(cfg)).model.backbone.type == 'VisionTransformer'


def test_tools_take_a_config_by_scope():
    """``tools/train.py mmtlalign::deit-s_8xb128.py``: the CONFIG argument by scope too."""
    from mmtlalign.cli import launch
    by_name = launch.load_config('mmtlalign::deit-s_8xb128.py')
    assert by_name.filename == osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py')
    assert launch.default_work_dir(by_name, 'mmtlalign::deit-s_8xb128.py') == (
        './work_dirs/deit-s_8xb128')
    with pytest.raises(launch.UserInputError, match=r"^config 'mmtlalign::nothing.py': there is "
                                                    r'no nothing.py under'):
        launch.load_config('mmtlalign::nothing.py')


def test_scope_base_that_does_not_exist_is_one_line(tmp_path):
    from mmtlalign.cli import launch
    cfg = tmp_path / 'mine.py'
    cfg.write_text("_base_ = 'mmtlalign::tlalign/deit-s_8xb1024.py'\n")
    with pytest.raises(launch.UserInputError) as e:
        launch.load_config(str(cfg))  # what tools/train.py and tools/test.py print
    error = str(e.value)
    assert "'mmtlalign::tlalign/deit-s_8xb1024.py': there is no tlalign/deit-s_8xb1024.py" in error
    assert "e.g. 'mmtlalign::tlalign/deit-s_8xb128.py'" in error and '\n' not in error


# ----------------------------------------------------------------------------- item 2
@pytest.fixture(scope='module')
def user_checkpoint(smoke_run):
    result, work_dir = smoke_run
    ok(result)
    return osp.join(work_dir, 'epoch_1.pth')


def _test_cmd(project, imagenet, checkpoint, work_dir, *extra):
    options = [o for o in _smoke_options(imagenet) if o.startswith(('test_', 'model.', 'data_'))]
    return [PY, TEST_TOOL, str(project / 'my_deit.py'), checkpoint, '--work-dir', work_dir,
            *extra, '--cfg-options', *options]


@pytest.mark.slow
def test_show_dir_saves_one_drawn_image_per_sample(project, imagenet, user_checkpoint, tmp_path):
    show_dir = tmp_path / 'shown'
    out = ok(run_tool(_test_cmd(project, imagenet, user_checkpoint, str(tmp_path / 'w'),
                                '--show-dir', str(show_dir))))
    assert re.search(r'accuracy/top1: [\d.]+', out), out[-2000:]
    val = [line.split()[0] for line in open(osp.join(imagenet, 'meta', 'val.txt'))]
    # mmpretrain's VisualizationHook: <image name>_0.png per test sample
    assert sorted(os.listdir(show_dir)) == sorted(f'{name}_0.png' for name in val)
    with Image.open(show_dir / f'{val[0]}_0.png') as img:
        assert img.size[0] >= 64 and img.mode == 'RGB'
    # --interval 3: every third sample (0, 3, 6)
    every = tmp_path / 'every3'
    ok(run_tool(_test_cmd(project, imagenet, user_checkpoint, str(tmp_path / 'w3'),
                          '--show-dir', str(every), '--interval', '3')))
    assert len(os.listdir(every)) == len(range(0, len(val), 3))


@pytest.mark.slow
def test_tta_averages_flipped_predictions(project, imagenet, user_checkpoint, tmp_path):
    scores = {}
    for name, extra in (('plain', []), ('tta', ['--tta'])):
        out_file = str(tmp_path / f'{name}.pkl')
        log = ok(run_tool(_test_cmd(project, imagenet, user_checkpoint, str(tmp_path / name),
                                    '--out', out_file, *extra)))
        assert re.search(r'accuracy/top1: [\d.]+', log)
        with open(out_file, 'rb') as f:
            scores[name] = torch.stack([torch.as_tensor(r['pred_score']) for r in pickle.load(f)])
    assert scores['tta'].shape == scores['plain'].shape
    assert not torch.allclose(scores['tta'], scores['plain'])  # the flip changed the scores
    torch.testing.assert_close(scores['tta'].sum(1), torch.ones(len(scores['tta'])))


@pytest.mark.slow
def test_show_without_a_display_and_tta_twice_are_refused(tmp_path):
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')  # never read: both are refused before the model is built
    result = run_tool([PY, TEST_TOOL, osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py'),
                       str(ckpt), '--show'], env={'DISPLAY': '', 'WAYLAND_DISPLAY': ''})
    error = _one_line_error(result)
    assert '--show opens a window' in error and 'use --show-dir DIR' in error
    from mmengine.config import Config

    from mmtlalign.cli import test_options
    ms = Config.fromfile(osp.join(ROOT, 'configs/tlalign/ade20k/'
                                        'upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512_ms.py'))
    with pytest.raises(test_options.UserInputError, match=r'already tests with test-time '
                                                          r'augmentation \(model.type=SegTTAModel'):
        test_options.apply_tta(ms)


def test_tta_and_show_follow_the_task():
    """Per default_scope, the config changes upstream's tools/test.py makes."""
    from mmengine.config import Config

    from mmtlalign.cli import test_options
    cls = _recipe()
    test_options.apply_tta(cls)
    assert cls.model.type == 'mmpretrain.AverageClsScoreTTA' and cls.model.module.type == (
        'TLAlignClassifier')
    flip = cls.test_dataloader.dataset.pipeline[-1]
    assert flip.type == 'TestTimeAug' and flip.transforms[1][0].type == 'PackInputs'

    det = Config.fromfile(COCO_CONFIG)
    test_options.apply_show(det, show_dir='shown')
    with pytest.raises(test_options.UserInputError, match='merges boxes only'):
        test_options.apply_tta(det)  # Mask R-CNN: mmdet's TTA has no masks
    det.model.roi_head.mask_head = None
    test_options.apply_tta(det)
    assert det.default_hooks.visualization.draw and (
        det.default_hooks.visualization.test_out_dir == 'shown')
    assert det.model.type == 'DetTTAModel' and det.model.module.type == 'MaskRCNN'
    assert det.test_dataloader.dataset.pipeline[-1].transforms[1][0].type == 'PackDetInputs'

    seg = Config.fromfile(osp.join(
        ROOT, 'configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py'))
    test_options.apply_show(seg, show_dir='shown', interval=1)
    test_options.apply_tta(seg)
    assert seg.visualizer.save_dir == 'shown' and seg.default_hooks.visualization.draw
    assert seg.model.type == 'SegTTAModel' and seg.model.module.type == 'EncoderDecoder'
    assert seg.test_dataloader.dataset.pipeline == seg.tta_pipeline
    seg.pop('tta_pipeline')
    seg.model = seg.model.module
    with pytest.raises(test_options.UserInputError, match='--tta needs tta_pipeline'):
        test_options.apply_tta(seg)


# ----------------------------------------------------------------------------- item 3
@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    """The 80-category COCO layout, plus variants of its train json: 3 categories; no images;
    annotations of category ids the file does not have."""
    root = datagen.make_coco(str(tmp_path_factory.mktemp('coco') / 'coco'))
    for split in ('train2017', 'val2017'):
        path = osp.join(root, 'annotations', f'instances_{split}.json')
        data = json.load(open(path))
        three = dict(data, categories=data['categories'][:3],
                     annotations=[a for a in data['annotations'] if a['category_id'] <= 3])
        json.dump(three, open(path.replace('instances_', 'three_'), 'w'))
        json.dump(dict(data, images=[]), open(path.replace('instances_', 'noimages_'), 'w'))
        unknown = [dict(a, category_id=900 + a['category_id']) for a in data['annotations']]
        json.dump(dict(data, annotations=unknown),
                  open(path.replace('instances_', 'unknown_'), 'w'))
    return root


def _coco_cfg(coco, prefix='instances', **options):
    from mmengine.config import Config
    cfg = Config.fromfile(COCO_CONFIG)
    for loader, split in (('train_dataloader', 'train2017'), ('val_dataloader', 'val2017'),
                          ('test_dataloader', 'val2017')):
        cfg[loader].dataset.data_root = coco
        cfg[loader].dataset.ann_file = f'annotations/{prefix}_{split}.json'
    cfg.merge_from_dict(options)
    return cfg


@pytest.mark.slow
def test_three_categories_with_the_default_classes_fail_before_training(coco, tmp_path):
    """The issue's case: a 3-category json, no metainfo.classes (CocoDataset's 80), through
    tools/train.py: one line, before the model is built."""
    options = []
    for loader, split in (('train_dataloader', 'train2017'), ('val_dataloader', 'val2017')):
        options += [f'{loader}.dataset.data_root={coco}',
                    f'{loader}.dataset.ann_file=annotations/three_{split}.json']
    result = run_tool([PY, TRAIN_TOOL, COCO_CONFIG, '--work-dir', str(tmp_path / 'w'),
                       '--cfg-options', *options])
    error = _one_line_error(result)
    assert ("train_dataloader.dataset sets no metainfo.classes, so CocoDataset's default "
            'classes apply (80 names), and 77 of them are not categories of') in error, error
    assert "the file has 3: 'person', 'bicycle', 'car'" in error
    assert "metainfo = dict(classes=('person', 'bicycle', 'car'))" in error
    assert 'num_classes=3' in error
    assert not glob.glob(str(tmp_path / 'w' / '*.pth'))


def test_coco_classes_and_heads_that_fit_pass(coco):
    from mmtlalign.cli import launch
    loaders = ['train_dataloader', 'val_dataloader', 'test_dataloader']
    launch.check_coco_classes(_coco_cfg(coco), loaders)  # 80 categories, the default classes
    three = ('person', 'bicycle', 'car')
    options = {f'{loader}.dataset.metainfo': dict(classes=three) for loader in loaders}
    cfg = _coco_cfg(coco, 'three', **options)
    with pytest.raises(launch.UserInputError, match=r'model.roi_head.bbox_head.num_classes=80 '
                                                    r'but the dataset has 3 classes'):
        launch.check_coco_classes(cfg, loaders)
    cfg.merge_from_dict({'model.roi_head.bbox_head.num_classes': 3,
                         'model.roi_head.mask_head.num_classes': 3})
    launch.check_coco_classes(cfg, loaders)


def test_coco_without_images_or_with_unknown_categories(coco):
    """Issue 18: these passed the old pre-check and failed in training with ``need at least one
    array to concatenate``."""
    from mmtlalign.cli import launch
    with pytest.raises(launch.UserInputError, match=r'noimages_train2017.json.*lists no images '
                                                    r'\(its "images" is empty\)'):
        launch.check_coco_classes(_coco_cfg(coco, 'noimages'), ['train_dataloader'])
    with pytest.raises(launch.UserInputError) as e:
        launch.check_coco_classes(_coco_cfg(coco, 'unknown'), ['train_dataloader'])
    message = str(e.value)
    assert 'none of its' in message and 'annotations has the category id of one of the 80 ' \
        'classes in effect' in message and 'category_id 901, 902' in message, message
    assert '\n' not in message


# ----------------------------------------------------------------------------- item 6
@pytest.mark.slow
def test_python_m_mmtlalign_reports_version_environment_and_suites():
    import mmtlalign
    out = ok(run_tool([PY, '-m', 'mmtlalign']))
    assert out.startswith(f'mmtlalign {mmtlalign.__version__}\n'), out[:200]
    for key in ('PyTorch', 'MMEngine', 'MMCV ops', 'MMPreTrain', 'MMDetection',
                'MMSegmentation', 'CUDA available'):
        assert re.search(rf'^  {key} +\S', out, re.M), key
    assert re.search(r'^  MMCV ops +compiled with', out, re.M), out  # setup_env builds the ops
    suites = sorted(osp.splitext(osp.basename(p))[0]
                    for p in glob.glob(osp.join(ROOT, 'configs', 'benchmarks', '*.py')))
    for name in suites:
        assert re.search(rf'^  {re.escape(name)} +\d+ arms x \d+ seeds \(', out, re.M), name
    assert 'pkg_resources' not in out


@pytest.mark.slow
def test_no_pkg_resources_warning_in_tool_output(tmp_path):  # (tmp_path holds the name)
    """Reading a config with an ``mmpretrain::`` base imports pkg_resources (mmengine looks the
    package up with it): setuptools' deprecation warning must not reach the tool's output."""
    config = osp.join(ROOT, 'configs/tlalign/deit-s_8xb128.py')
    control = run_tool([PY, '-c',
                        f'from mmengine.config import Config; Config.fromfile({config!r})'])
    if 'pkg_resources is deprecated' not in control.stderr:  # so the check below can fail
        pytest.skip('this setuptools does not warn about pkg_resources')
    result = run_tool([PY, TEST_TOOL, config, str(tmp_path / 'missing.pth')])
    assert _one_line_error(result) == f"error: checkpoint {str(tmp_path / 'missing.pth')!r} " \
        'does not exist.'
    assert 'is deprecated' not in result.stdout + result.stderr, result.stderr
    assert 'Warning' not in result.stdout + result.stderr, result.stderr


def test_metafile_and_model_index():
    import yaml
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    assert index == {'Import': ['configs/tlalign/metafile.yml', 'configs/peers/metafile.yml']}
    meta = yaml.safe_load(open(osp.join(ROOT, 'configs/tlalign/metafile.yml')))
    assert [c['Name'] for c in meta['Collections']] == ['TL-Align']
    assert meta['Collections'][0]['Paper']['URL'] == 'https://arxiv.org/abs/2210.06455'
    names = [m['Name'] for m in meta['Models']]
    assert len(names) == len(set(names))
    paper = {'deit-t_8xb128': 73.2, 'deit-s_8xb128': 80.6, 'deit-b_8xb128': 82.3,
             'swin-t_16xb64': 81.4, 'swin-s_16xb64': 83.4, 'swin-b_16xb64': 83.7,
             'deit-t_8xb128_deit': 72.2, 'deit-s_8xb128_deit': 79.8, 'deit-b_8xb128_deit': 81.8,
             'swin-t_16xb64_cutmix': 81.2, 'swin-s_16xb64_cutmix': 83.0,
             'swin-b_16xb64_cutmix': 83.5}
    for model in meta['Models']:
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
        assert 'Weights' not in model  # none released
        name = osp.splitext(osp.basename(model['Config']))[0]
        top1 = model['Results'][0]['Metrics']['Top 1 Accuracy'] if model['Results'] else None
        assert top1 == paper.get(name), name
    assert set(paper) <= {osp.splitext(osp.basename(m['Config']))[0] for m in meta['Models']}
    # the peers' released recipes (issue 32), with the numbers their authors published
    peers = yaml.safe_load(open(osp.join(ROOT, 'configs/peers/metafile.yml')))
    assert [c['Name'] for c in peers['Collections']] == ['MixPro', 'SMMix', 'TokenMix']
    published = {'mixpro_deit-s-p14_8xb128_in1k': None, 'mixpro_deit-s-p14_8xb128_in1k_pal': 81.3,
                 'smmix_deit-s_4xb256_in1k': 81.1, 'tokenmix_deit-s_8xb128_in1k': 80.8}
    assert [m['Name'] for m in peers['Models']] == list(published)
    for model in peers['Models']:
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
        results = model.get('Results')
        top1 = results[0]['Metrics']['Top 1 Accuracy'] if results else None
        assert top1 == published[model['Name']], model['Name']


# ----------------------------------------------------------------------------- item 2, mmdet
DET_TEST_TINY = """
_base_ = {base!r}
data_root = {data_root!r}
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
model = dict(test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(score_thr=0.0)))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
"""


def _random_weights(config, path):
    """A checkpoint of the config's model with its initial (random) weights, as saved by
    mmengine (``state_dict`` + ``meta``)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmtlalign  # noqa: F401
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


@pytest.mark.slow
def test_detection_show_dir_and_tta(coco, tmp_path):
    """mmdet's meaning: --show-dir DIR draws into <work_dir>/<timestamp>/DIR/<image name>;
    --tta without tta_model/tta_pipeline flips and merges with DetTTAModel (warning)."""
    config = tmp_path / 'det.py'
    config.write_text(DET_TEST_TINY.format(base=COCO_CONFIG, data_root=coco))
    ckpt = _random_weights(str(config), tmp_path / 'det.pth')
    work = tmp_path / 'work'
    out = ok(run_tool([PY, TEST_TOOL, str(config), ckpt, '--work-dir', str(work),
                       '--show-dir', 'shown']))
    assert re.search(r'coco/bbox_mAP: [\d.-]+', out), out[-2000:]
    drawn = glob.glob(str(work / '*' / 'shown' / '*.jpg'))
    images = json.load(open(osp.join(coco, 'annotations/instances_val2017.json')))['images']
    assert sorted(map(osp.basename, drawn)) == sorted(i['file_name'] for i in images)
    with Image.open(drawn[0]) as img:
        assert img.size == (2 * 128, 96)  # ground truth | prediction, on the original image
    # mmdet's DetTTAModel merges boxes only: refused for Mask R-CNN, in one line
    error = _one_line_error(run_tool([PY, TEST_TOOL, str(config), ckpt, '--tta']))
    assert "DetTTAModel) merges boxes only, and this model predicts masks" in error
    boxes = tmp_path / 'det_boxes.py'  # the same detector without its mask head
    boxes.write_text(f"_base_ = {str(config)!r}\n"
                     "model = dict(roi_head=dict(mask_head=None, mask_roi_extractor=None))\n"
                     "test_evaluator = dict(metric='bbox')\n")
    ckpt = _random_weights(str(boxes), tmp_path / 'det_boxes.pth')
    out = ok(run_tool([PY, TEST_TOOL, str(boxes), ckpt, '--work-dir', str(tmp_path / 'tta'),
                       '--tta']))
    assert 'warning: the config has no tta_model; --tta merges the flipped predictions' in out
    assert re.search(r'coco/bbox_mAP: [\d.-]+', out), out[-2000:]


# ----------------------------------------------------------------------------- item 2, mmseg
SEG_TEST_TINY = """
_base_ = {base!r}
data_root = {data_root!r}
model = dict(data_preprocessor=dict(size=(64, 64)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=test_pipeline))
# mmseg's visualization hook reads runner.iter, which builds the training loop (as upstream)
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
"""


@pytest.mark.slow
def test_segmentation_show_dir_and_tta(tmp_path):
    """mmseg's meaning: --show-dir DIR is the visualizer's save_dir (DIR/vis_data/vis_image/
    test_<image>_<iter>.png); --tta runs the config's tta_pipeline (mmseg's ADE20K multi-scale
    + flip) with SegTTAModel, the same test as the _ms.py config."""
    ade = datagen.make_ade20k(str(tmp_path / 'ade' / 'ADEChallengeData2016'))
    config = tmp_path / 'seg.py'
    config.write_text(SEG_TEST_TINY.format(base=osp.join(
        ROOT, 'configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py'),
        data_root=ade))
    ckpt = _random_weights(str(config), tmp_path / 'seg.pth')
    shown = tmp_path / 'shown'
    out = ok(run_tool([PY, TEST_TOOL, str(config), ckpt, '--work-dir', str(tmp_path / 'w'),
                       '--show-dir', str(shown), '--interval', '1']))
    assert re.search(r'mIoU: [\d.]+', out), out[-2000:]
    val = sorted(os.listdir(osp.join(ade, 'images', 'validation')))
    assert sorted(os.listdir(shown / 'vis_data' / 'vis_image')) == [
        f'test_{name}_0.png' for name in val]
    out = ok(run_tool([PY, TEST_TOOL, str(config), ckpt, '--work-dir', str(tmp_path / 'tta'),
                       '--tta']))
    assert re.search(r'mIoU: [\d.]+', out), out[-2000:]
    dumped = glob.glob(str(tmp_path / 'tta' / '*' / 'vis_data' / 'config.py'))
    text = open(dumped[0]).read()
    assert "type='SegTTAModel'" in text and 'scale_factor=1.75' in text
