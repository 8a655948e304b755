"""mmpretrain's own analysis tools on mmtlalign configs and checkpoints, run as a user runs
them: ``mim run mmpretrain TOOL ...`` (the scripts mmpretrain installs under ``.mim/tools``).

The run they analyse is real: a TL-Align DeiT recipe (configs/tlalign/deit-t_8xb128.py, shrunk
to 2 blocks at 64 px by :func:`datagen.tiny_deit_config`) trained by tools/train.py on a tiny
ImageNet-layout folder and tested by tools/test.py ``--out``; browse_dataset also reads the
main job's demo config on tiny Fashion-MNIST files.
"""
import glob
import os
import os.path as osp
import shutil
import sys

import pytest

import datagen
from helpers import ROOT, assert_png, ok, run_tool

MIM = osp.join(osp.dirname(sys.executable), 'mim')
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo')


def mim_run(tool, *args):
    """``mim run mmpretrain TOOL ARGS`` from the repository root."""
    mim = [MIM] if osp.isfile(MIM) else [shutil.which('mim') or 'mim']
    return run_tool([*mim, 'run', 'mmpretrain', tool, *map(str, args)], timeout=600)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A TL-Align DeiT trained for one epoch and tested, as the tools find them."""
    tmp = tmp_path_factory.mktemp('upstream_tools')
    data = datagen.make_imagenet(str(tmp / 'data'), per_class=2, val_per_class=2)
    config = tmp / 'deit-t_tlalign_tiny.py'
    config.write_text(datagen.tiny_deit_config(
        osp.join(ROOT, 'configs', 'tlalign', 'deit-t_8xb128.py')))
    work = str(tmp / 'work')
    ok(datagen.train_tool(config, work, data))
    options = datagen.tiny_cls_options(data)
    ckpt = osp.join(work, 'epoch_1.pth')
    result = str(tmp / 'result.pkl')
    ok(run_tool([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config), ckpt,
                 '--work-dir', str(tmp / 'test'), '--out', result, '--cfg-options', *options]))
    # the options the tools need: the data root (and small batches) of the tiny run
    tool_options = [o for o in options if '.data_root=' in o or o.startswith('model.head.')]
    json_log, = glob.glob(osp.join(work, '2*', 'vis_data', '2*.json'))
    image = sorted(glob.glob(osp.join(data, 'val', '*.JPEG')))[0]
    return dict(tmp=tmp, data=data, config=str(config), ckpt=ckpt, result=result,
                options=tool_options, json_log=json_log, image=image)


def _fmnist(tmp):
    src, root = str(tmp / 'fmnist_src'), str(tmp / 'fmnist')
    datagen.write_fmnist(src, n_train=8, n_test=4, gz=True)
    from mmtlalign.datasets import prepare_fashion_mnist
    prepare_fashion_mnist(root, source=src, use_apt=False, allow_download=False)
    return root


def browse_dataset_demo(run, out):
    root = _fmnist(run['tmp'])
    return ('browse_dataset', osp.join(DEMO, 'fmnist_vit_tlalign.py'), '-o', out, '-n', 2,
            '--not-show', '--mode', 'pipeline', '--cfg-options',
            f'train_dataloader.dataset.data_root={root}', 'train_dataloader.dataset.indices=None')


def browse_dataset(run, out):
    return ('browse_dataset', run['config'], '-o', out, '-n', 2, '--not-show', '--mode',
            'concat', '--cfg-options', *run['options'])


def analyze_logs(run, out):
    return ('analyze_logs', 'plot_curve', run['json_log'], '--keys', 'loss',
            'token_fluctuation', '--out', osp.join(out, 'curves.png'))


def analyze_results(run, out):
    return ('analyze_results', run['config'], run['result'], '--out-dir', out, '--topk', 2,
            '--cfg-options', *run['options'])


def get_flops(run, out):
    return ('get_flops', run['config'], '--shape', 64, 64)


def confusion_matrix(run, out):
    # the recipe's ImageNet dataset names 1000 classes; the tiny folder has 4
    return ('confusion_matrix', run['config'], run['ckpt'], '--show-path',
            osp.join(out, 'confusion.png'), '--include-values', '--cfg-options', *run['options'],
            'test_dataloader.dataset.classes=[a,b,c,d]')


def vis_scheduler(run, out):
    return ('vis_scheduler', run['config'], '--dataset-size', 1280, '--ngpus', 1, '--not-show',
            '--save-path', osp.join(out, 'lr.png'))


def vis_cam(run, out):
    return ('vis_cam', run['image'], run['config'], run['ckpt'], '--vit-like',
            '--save-path', osp.join(out, 'cam.png'), '--cfg-options', *run['options'])


def check_images(out, pattern, min_size=(60, 60)):
    files = sorted(glob.glob(osp.join(out, pattern)))
    assert files, f'nothing matching {pattern} in {out}'
    for f in files:
        assert_png(f, min_size) if f.endswith('.png') else None
    return files


def check_browse_demo(out, text):
    assert len(check_images(out, '*')) == 2


def check_browse(out, text):
    assert len(check_images(out, '*.JPEG') + glob.glob(osp.join(out, '*.jpg'))) >= 1


def check_logs(out, text):
    assert_png(osp.join(out, 'curves.png'))


def check_results(out, text):
    assert osp.isdir(osp.join(out, 'success')) and osp.isdir(osp.join(out, 'fail'))
    assert glob.glob(osp.join(out, '*', '*'))


def check_flops(out, text):
    assert 'Flops:' in text and 'Params:' in text, text[-2000:]


def check_confusion(out, text):
    assert_png(osp.join(out, 'confusion.png'))


def check_scheduler(out, text):
    assert_png(osp.join(out, 'lr.png'))


def check_cam(out, text):
    assert_png(osp.join(out, 'cam.png'), min_size=(60, 60))


TOOLS = {  # name: (mim arguments, check of the output folder and text)
    'browse_dataset-demo': (browse_dataset_demo, check_browse_demo),
    'browse_dataset': (browse_dataset, check_browse),
    'analyze_logs': (analyze_logs, check_logs),
    'analyze_results': (analyze_results, check_results),
    'get_flops': (get_flops, check_flops),
    'confusion_matrix': (confusion_matrix, check_confusion),
    'vis_scheduler': (vis_scheduler, check_scheduler),
    'vis_cam': (vis_cam, check_cam),
}


@pytest.mark.slow
@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_mmpretrain_tool_on_our_config_and_checkpoint(run, tool, tmp_path):
    if tool == 'vis_cam':
        pytest.importorskip('pytorch_grad_cam')
    args, check = TOOLS[tool]
    out = str(tmp_path / 'out')
    os.makedirs(out)  # the tools write into an existing folder
    text = ok(mim_run(*args(run, out)))
    check(out, text)


def test_inherited_visualizer_has_no_scope_key():
    """The cause of browse_dataset's TypeError, in every classification recipe: a visualizer
    inherited through ``mmpretrain::`` is tagged ``_scope_``, which UniversalVisualizer's
    constructor refuses. Our recipes declare it untagged."""
    from mmengine.config import Config
    from mmpretrain.visualization import UniversalVisualizer
    inherited = Config.fromfile(datagen_config('mmpretrain::deit/deit-tiny_4xb256_in1k.py'))
    assert inherited.visualizer.get('_scope_') == 'mmpretrain'  # the attack on the tool
    with pytest.raises(TypeError, match='_scope_'):
        UniversalVisualizer(**{k: v for k, v in inherited.visualizer.items() if k != 'type'})
    for name in ('deit-s_8xb128.py', 'deit-t_8xb128_deit.py', 'swin-t_16xb64.py',
                 'transfer/deit-s_ft-cifar100.py', 'demo/fmnist_vit_tlalign.py'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', 'tlalign', name))
        assert '_scope_' not in cfg.visualizer, name
        kwargs = {k: v for k, v in cfg.visualizer.items() if k != 'type'}
        UniversalVisualizer(**kwargs, name=f'test_upstream_tools {name}')


def datagen_config(base):
    """A one-line config inheriting ``base`` (in a temporary file)."""
    import tempfile
    f = tempfile.NamedTemporaryFile('w', suffix='.py', delete=False)
    f.write(f'_base_ = {base!r}\n')
    f.close()
    return f.name

