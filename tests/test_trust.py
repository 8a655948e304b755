"""Trust what you load (issue 10): crafted checkpoints run no code through any entry point;
genuine ones still load with ``weights_only=True``; checkpoints that do not fit the model are
refused; bad files get one-line errors.

Crafted files are real mmengine checkpoints (trained here) with a payload spliced into
``meta``: the pickle opcodes of each known route, written by a pickler that emits them raw.
A payload that ran would write ``marker``; every test checks it did not.
"""
import os
import os.path as osp
import pickle
import struct
import sys

import pytest
import torch

import datagen
from helpers import RawOpcodes, load_tool, run_main, save_with_raw_opcodes, trained_tiny_deit

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))



# ----------------------------------------------------------------------------- crafting
def _global(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _str(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def _builtin_eval():
    """getattr(getattr(getattr, '__self__'), 'eval'): builtins.eval via the builtins module."""
    getattr_ = _global('builtins', 'getattr')
    builtins_module = getattr_ + getattr_ + _str('__self__') + b'\x86R'
    return getattr_ + builtins_module + _str('eval') + b'\x86R'


def payloads(marker):
    """Pickle opcodes, each leaving one object on the stack; each would create ``marker``."""
    code = f"open({marker!r}, 'w').write('pwned')"
    history_buffer = _global('mmengine.logging.history_buffer', 'HistoryBuffer')
    reconstruct = _global('numpy.core.multiarray', '_reconstruct')
    return {
        # BUILD plants __setstate__=eval on an allowed instance; a second BUILD calls it
        'getattr_self_build': history_buffer + b')\x81' + b'}' + _str('__setstate__')
        + _builtin_eval() + b's' + b'b' + _str(code) + b'b',
        # the classic __reduce__ route
        'reduce_os_system': _global('posix', 'system') + _str(f'touch {marker}') + b'\x85R',
        # numpy's own exec gadget
        'numpy_runstring': _global('numpy.testing._private.utils', 'runstring') + _str(code)
        + b'}' + b'\x86R',
        # an allowed numpy reconstructor handed a callable reached through getattr
        'numpy_reconstruct_gadget': reconstruct + _builtin_eval() + b'K\x00\x85' + _str('b')
        + b'\x87R',
        # an allowed reconstructor planted as a HistoryBuffer statistic (class-wide table)
        'statistics_poison': history_buffer + b')\x81' + b'}' + _str('statistics_methods')
        + b'}' + _str('mean') + reconstruct + b's' + b's' + b'b',
        # an allowed instance given attributes that are not its own
        'build_plant_attribute': history_buffer + b')\x81' + b'}' + _str('__class__')
        + _global('numpy', 'ndarray') + b's' + b'b',
    }


def splice(genuine, payload, dst):
    """Save the genuine checkpoint with the payload under meta['note']."""
    from mmtlalign.checkpoint.loader import load_checkpoint_file
    ckpt = load_checkpoint_file(genuine)
    ckpt['meta']['note'] = RawOpcodes(payload)
    save_with_raw_opcodes(ckpt, dst, pickle_protocol=2)
    return dst


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return trained_tiny_deit(tmp_path_factory.mktemp('trust'))


@pytest.fixture
def marker(tmp_path):
    path = str(tmp_path / 'PWNED')
    yield path
    assert not osp.exists(path), 'a crafted checkpoint ran code'


ROUTES = list(payloads('x'))


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize('route', ['getattr_self_build', 'reduce_os_system', 'numpy_runstring'])
def test_payloads_are_live(env, tmp_path, route):
    """The crafted files are real attacks: a full unpickle runs them, and so does the old
    process-wide allow-list with ``builtins.getattr`` (the hole this issue closes)."""
    from mmengine.logging import HistoryBuffer

    from mmtlalign.checkpoint.loader import _numpy_globals
    marker = str(tmp_path / 'PWNED')
    crafted = splice(env.genuine, payloads(marker)[route], str(tmp_path / 'crafted.pth'))
    torch.load(crafted, weights_only=False)
    assert osp.exists(marker)
    if route == 'getattr_self_build':
        os.remove(marker)
        with torch.serialization.safe_globals([HistoryBuffer, getattr] + _numpy_globals()):
            ckpt = torch.load(crafted, weights_only=True)
        assert osp.exists(marker) and 'state_dict' in ckpt  # evaluates normally, code ran


@pytest.mark.parametrize('route', ROUTES)
def test_every_route_is_refused_by_the_loader(env, marker, tmp_path, route):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint.loader import CheckpointLoadError, load_checkpoint_file
    crafted = splice(env.genuine, payloads(marker)[route], str(tmp_path / 'crafted.pth'))
    with pytest.raises(CheckpointLoadError, match='weights-only loader refuses'):
        load_checkpoint_file(crafted)
    with pytest.raises(CheckpointLoadError):  # mmengine's local scheme, once mmtlalign is in
        _load_checkpoint(crafted, map_location='cpu')
    # importing mmtlalign widens nothing: plain torch.load refuses it as torch alone does
    with pytest.raises(pickle.UnpicklingError):
        torch.load(crafted, weights_only=True)


def test_genuine_checkpoint_loads_weights_only_and_torch_stays_strict(env):
    from mmengine.logging import HistoryBuffer

    from mmtlalign.checkpoint.loader import load_checkpoint_file
    ckpt = load_checkpoint_file(env.genuine)
    buffers = [v for v in ckpt['message_hub']['log_scalars'].values()]
    assert buffers and all(type(b) is HistoryBuffer for b in buffers)  # plain class again
    assert all(isinstance(b.mean(), float) or b.mean().size == 1 for b in buffers)
    # the allow-list is scoped to our loads: outside them torch refuses the message hub
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(env.genuine, weights_only=True)
    # and it is saved again as a plain mmengine HistoryBuffer
    out = env.root / 'resaved.pth'
    torch.save(ckpt, out)
    assert type(load_checkpoint_file(str(out))['message_hub']['log_scalars'][
        next(iter(ckpt['message_hub']['log_scalars']))]) is HistoryBuffer


ENTRY_POINTS = ['test', 'resume', 'token_fluctuation', 'cls_to_backbone', 'init_cfg',
                'get_model']


def _enter(env, entry, crafted, tmp_path):
    """Load ``crafted`` through one entry point; return the one-line error it gave."""
    from mmtlalign.checkpoint.loader import CheckpointLoadError
    if entry == 'test':
        return run_main('tools/test.py', [env.config, crafted, '--work-dir', str(tmp_path / 'w'),
                                          '--cfg-options', *env.options])
    if entry == 'resume':
        return run_main('tools/train.py', [env.config, '--resume', crafted, '--work-dir',
                                           str(tmp_path / 'w'), '--cfg-options', *env.options])
    if entry == 'token_fluctuation':
        return run_main('tools/analysis/token_fluctuation.py', [
            env.config, crafted, '--out-dir', str(tmp_path / 'tf'), '--num-batches', '1',
            '--cfg-options', *[o for o in env.options if o.startswith(('val_', 'model.'))]])
    if entry == 'cls_to_backbone':
        return run_main('tools/model_converters/cls_to_backbone.py',
                        [crafted, str(tmp_path / 'bb.pth')])
    from mmengine.config import Config
    cfg = Config.fromfile(env.config)
    cfg.merge_from_dict({'model.head.num_classes': 4})
    try:
        if entry == 'init_cfg':
            from mmpretrain.registry import MODELS
            cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=crafted,
                                               prefix='backbone.')
            MODELS.build(cfg.model).init_weights()
        else:
            from mmpretrain import get_model
            get_model(cfg, pretrained=crafted)
    except CheckpointLoadError as e:
        return str(e)
    return None


@pytest.mark.slow
@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_crafted_checkpoints_run_no_code_through_any_entry_point(env, marker, tmp_path, entry):
    for route, payload in payloads(marker).items():
        crafted = splice(env.genuine, payload, str(tmp_path / f'{route}.pth'))
        error = _enter(env, entry, crafted, tmp_path)
        assert error is not None, f'{entry} accepted the {route} checkpoint'
        assert 'weights-only loader refuses' in error and '\n' not in error, error
        assert not osp.exists(marker), f'{route} ran code through {entry}'


@pytest.mark.parametrize('content,expected', [
    (b'hello world, not a checkpoint\n' * 4, 'not a readable PyTorch checkpoint'),
    ('truncate', 'not a readable PyTorch checkpoint'),
])
def test_corrupt_files_are_named_and_never_told_to_unpickle(env, tmp_path, content, expected):
    path = tmp_path / 'bad.pth'
    if content == 'truncate':
        data = open(env.genuine, 'rb').read()
        path.write_bytes(data[:len(data) // 2])
    else:
        path.write_bytes(content)
    error = run_main('tools/model_converters/cls_to_backbone.py', [str(path), str(tmp_path / 'o')])
    assert expected in error and '--trust-checkpoint' not in error and '\n' not in error
    error = run_main('tools/test.py', [env.config, str(path), '--work-dir', str(tmp_path / 'w'),
                                       '--cfg-options', *env.options])
    assert expected in error and '\n' not in error


def test_refused_objects_suggest_trust_only_for_own_files(env, tmp_path):
    crafted = splice(env.genuine, payloads('/nonexistent/x')['reduce_os_system'],
                     str(tmp_path / 'c.pth'))
    error = run_main('tools/model_converters/cls_to_backbone.py', [crafted, str(tmp_path / 'o')])
    assert 'refuses' in error and 'runs any code it carries' in error


# ----------------------------------------------------------------------------- fit
@pytest.mark.slow
@pytest.mark.parametrize('case', ['num_classes', 'swin_on_vit', 'backbone_only'])
def test_checkpoint_that_does_not_fit_is_refused_in_one_line(env, tmp_path, case):
    from mmtlalign.checkpoint.convert import classifier_to_backbone
    from mmtlalign.checkpoint.loader import load_checkpoint_file
    ckpt, options = env.genuine, list(env.options)
    if case == 'num_classes':
        options.append('model.head.num_classes=5')
        expected = 'head has 4 classes and the config\'s 5.*model.head.num_classes=4'
    elif case == 'swin_on_vit':
        from mmpretrain.models import ImageClassifier
        swin = ImageClassifier(
            backbone=dict(type='SwinTransformer', arch='tiny', img_size=64, window_size=2),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=768))
        ckpt = str(tmp_path / 'swin.pth')
        torch.save(dict(state_dict=swin.state_dict(), meta=dict()), ckpt)
        expected = 'is a Swin but the model is a ViT/DeiT'
    else:
        ckpt = str(tmp_path / 'backbone.pth')
        torch.save(classifier_to_backbone(load_checkpoint_file(env.genuine)), ckpt)
        expected = 'backbone-only checkpoint'
    import re
    for tool, argv, extra in [('tools/test.py', [env.config, ckpt], []),
                              ('tools/train.py', [env.config, '--resume', ckpt], []),
                              ('tools/train.py', [env.config], [f'load_from={ckpt}'])]:
        error = run_main(tool, [*argv, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                                *options, *extra])
        assert error and re.search(expected, error) and '\n' not in error, error
        assert 'does not fit ImageClassifier' in error


@pytest.mark.slow
def test_genuine_checkpoint_scores_through_test_tool(env, tmp_path):
    metrics = load_tool('tools/test.py').main(
        [env.config, env.genuine, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         *env.options])
    assert 'accuracy/top1' in metrics


# ----------------------------------------------------------------------------- work dir
def test_second_run_in_a_live_work_dir_is_refused_and_stale_lock_is_not(tmp_path):
    import subprocess

    from mmtlalign.cli.work_dir_lock import WorkDirBusyError, hold_work_dir
    work_dir = str(tmp_path / 'w')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]);'
         'from mmtlalign.cli.work_dir_lock import hold_work_dir\n'
         'with hold_work_dir(sys.argv[2]):\n print("held", flush=True); time.sleep(600)',
         ROOT, work_dir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(WorkDirBusyError, match=rf'in use by a live run \(host .*, PID '
                                                   rf'{holder.pid}, started .*'):
            with hold_work_dir(work_dir):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_work_dir(work_dir):  # the killed run left no stale lock
        pass


@pytest.mark.slow
def test_train_tool_refuses_a_live_work_dir(env, tmp_path):
    import subprocess

    from mmtlalign.cli.work_dir_lock import hold_work_dir
    work_dir = str(tmp_path / 'w')
    with hold_work_dir(work_dir):  # this process is the live run
        result = subprocess.run(
            [sys.executable, osp.join(ROOT, 'tools/train.py'), env.config, '--work-dir',
             work_dir, '--cfg-options', *env.options], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(error) == 1 and f'PID {os.getpid()}' in error[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert not any(f.endswith('.pth') for f in os.listdir(work_dir))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize('options,expected', [
    # (a run shorter than the warm-up now trains, the warm-up shrunk: tests/test_newcomer.py)
    (['param_scheduler.0.end=0'],
     r'param_scheduler\[0\] \(LinearLR\) ends at 0, not after it begins \(0\)'),
])
def test_schedule_that_cannot_run(env, tmp_path, options, expected):
    import re
    error = run_main('tools/train.py', [env.config, '--work-dir', str(tmp_path / 'w'),
                                        '--cfg-options', *env.options, *options])
    assert error and re.search(expected, error) and '\n' not in error, error


@pytest.mark.parametrize('launcher,missing', [('pytorch', 'RANK'), ('slurm', 'SLURM_PROCID')])
def test_launcher_without_its_environment(env, tmp_path, monkeypatch, launcher, missing):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID',
                 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(name, raising=False)
    error = run_main('tools/train.py', [env.config, '--launcher', launcher, '--work-dir',
                                        str(tmp_path / 'w'), '--cfg-options', *env.options])
    assert error and f'--launcher {launcher} needs' in error and missing in error, error


@pytest.mark.parametrize('options,expected', [
    (['model.backbone.patch_size=12'],
     'not divisible by the patch size'),
    (['model.head.num_classes=2'], 'out of range for head.num_classes=2'),
])
def test_model_errors_are_one_line(env, tmp_path, options, expected):
    cfg = tmp_path / 'tlalign.py'
    cfg.write_text(f"_base_ = {env.config!r}\n"
                   "model = dict(type='TLAlignClassifier', train_cfg=None, "
                   "backbone=dict(type='AlignedVisionTransformer'), "
                   "mix=dict(type='TLAlignMix'))\n")
    error = run_main('tools/train.py', [str(cfg), '--work-dir', str(tmp_path / 'w'),
                                        '--cfg-options', *env.options, *options])
    assert error and expected in error and '\n' not in error, error


def test_backbone_without_forward_aligned_is_one_line(env, tmp_path):
    cfg = tmp_path / 'plain.py'
    cfg.write_text(f"_base_ = {env.config!r}\n"
                   "model = dict(type='TLAlignClassifier', train_cfg=None, align=True, "
                   "mix=dict(type='TLAlignMix'))\n")
    error = run_main('tools/train.py', [str(cfg), '--work-dir', str(tmp_path / 'w'),
                                        '--cfg-options', *env.options])
    assert error and 'has none' in error and 'forward_aligned' in error and '\n' not in error


def test_coco_class_names_missing_from_annotations(tmp_path):
    coco = datagen.make_coco(str(tmp_path / 'coco'))
    from mmengine.config import Config

    from mmtlalign.cli import launch
    cfg = Config.fromfile(osp.join(ROOT, 'configs/tlalign/coco/'
                                   'mask-rcnn_tlalign-swin-t_fpn_1x_coco.py'))
    names = [c['name'] for c in __import__('json').load(
        open(osp.join(coco, 'annotations/instances_val2017.json')))['categories']]
    wrong = names[:-1] + [names[-1].replace(' ', '') + 'x']
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = coco
        cfg[loader].dataset.metainfo = dict(classes=tuple(names))
    launch.check_coco_classes(cfg, ['train_dataloader', 'val_dataloader'])  # fits
    cfg.val_dataloader.dataset.metainfo = dict(classes=tuple(wrong))
    with pytest.raises(launch.UserInputError, match=rf"val_dataloader.dataset.metainfo.classes "
                                                    rf"has names that are not categories.*"
                                                    rf"'{wrong[-1]}'"):
        launch.check_coco_classes(cfg, ['train_dataloader', 'val_dataloader'])


# ----------------------------------------------------------------------------- file shapes
# (issue 29) What the unpickler lets through but no checkpoint holds: compressed zip records,
# sparse tensors, a million-item container, nesting deeper than any checkpoint.
_BOMB_BYTES = 400 * 2 ** 20


def _deflate_bomb(dst):
    """A real ``torch.save`` file of one 400 MB zero tensor, its records repacked DEFLATE:
    about 400 KB on disk."""
    import shutil
    import zipfile
    plain = dst + '.plain'
    torch.save({'state_dict': {'w': torch.zeros(_BOMB_BYTES, dtype=torch.uint8)}, 'meta': {}},
               plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(
            dst, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            with src.open(info) as r, out.open(info.filename, 'w', force_zip64=True) as w:
                shutil.copyfileobj(r, w, 1 << 20)
    os.remove(plain)
    return dst


_PEAK = """
import sys, torch
import mmtlalign  # both modes pay for the same imports
from mmtlalign.checkpoint.loader import load_checkpoint_file
try:
    ckpt = (load_checkpoint_file(sys.argv[2]) if sys.argv[1] == 'checked'
            else torch.load(sys.argv[2], weights_only=True))
    print('loaded', ckpt['state_dict']['w'].numel())
except Exception as e:
    print('refused', type(e).__name__, str(e).replace(chr(10), ' '))
# VmHWM: the peak of this process's own memory. ru_maxrss would not do: Linux keeps it across
# fork and exec, so it starts at the (test runner) parent's peak
hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]
print('maxrss_mb', int(hwm.split()[1]) // 1024)
"""


@pytest.mark.slow
def test_compressed_zip_records_are_refused_before_torch_inflates_them(tmp_path):
    import subprocess
    bomb = _deflate_bomb(str(tmp_path / 'bomb.pth'))
    size = os.path.getsize(bomb)
    assert size < 2 * 2 ** 20, size  # ~1000x smaller than what it inflates to
    peaks = {}
    for mode in ('plain', 'checked'):
        out = subprocess.run([sys.executable, '-c', _PEAK, mode, bomb], capture_output=True,
                             text=True, timeout=600, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
        lines = out.stdout.splitlines()
        assert lines and lines[-1].startswith('maxrss_mb'), out.stderr[-2000:]
        peaks[mode] = (lines[0], int(lines[-1].split()[1]))
    print(f'\nzip bomb of {size / 1024:.0f} KB: peak RSS plain torch.load '
          f'{peaks["plain"][1]} MB, checked {peaks["checked"][1]} MB')
    assert peaks['plain'][0] == f'loaded {_BOMB_BYTES}'  # live: torch inflates it
    assert peaks['checked'][0].startswith('refused CheckpointLoadError')
    assert 'compressed record' in peaks['checked'][0]
    assert peaks['plain'][1] - peaks['checked'][1] > 300, peaks


def test_sparse_tensors_are_refused(tmp_path):
    """A 1 KB sparse tensor that claims 10^12 elements: torch loads it (and checks only that
    its indices are inside the claimed shape); a converter's ``to_dense`` would not survive."""
    from mmtlalign.checkpoint.loader import CheckpointLoadError, load_checkpoint_file
    big = torch.sparse_coo_tensor(torch.tensor([[0, 999_999], [0, 999_999]]),
                                  torch.ones(2), size=(10 ** 6, 10 ** 6))
    for name, tensor in (('coo', big), ('csr', torch.eye(3).to_sparse_csr())):
        path = str(tmp_path / f'{name}.pth')
        torch.save({'state_dict': {'w': tensor}, 'meta': {}}, path)
        loaded = torch.load(path, weights_only=True)['state_dict']['w']  # live
        assert loaded.layout == tensor.layout and loaded.shape == tensor.shape
        with pytest.raises(CheckpointLoadError, match=f'layout {tensor.layout}') as error:
            load_checkpoint_file(path)
        assert '\n' not in str(error.value)


def test_million_item_containers_are_refused(tmp_path):
    """``dataset_meta`` with more classes than :data:`MAX_ITEMS` (ImageNet-21k has 21841)."""
    from mmtlalign.checkpoint.loader import MAX_ITEMS, CheckpointLoadError, load_checkpoint_file
    path = str(tmp_path / 'classes.pth')
    classes = ['c'] * (MAX_ITEMS + 1)
    torch.save({'state_dict': {}, 'meta': {'dataset_meta': {'classes': classes}}}, path)
    assert len(torch.load(path, weights_only=True)['meta']['dataset_meta']['classes']) > MAX_ITEMS
    with pytest.raises(CheckpointLoadError, match=r"\['classes'\] holds 1000001 items"):
        load_checkpoint_file(path)


def test_deep_nesting_is_refused_before_anything_recurses(tmp_path):
    """100000 nested lists (built by the unpickler's loop, no recursion): plain torch.load
    returns them and the first recursive walk (``copy.deepcopy``, printing) overflows."""
    import copy

    from mmtlalign.checkpoint.loader import CheckpointLoadError, load_checkpoint_file
    depth = 100_000
    path = str(tmp_path / 'deep.pth')
    save_with_raw_opcodes({'state_dict': {}, 'meta': RawOpcodes(b']' * depth + b'a' * (depth - 1))},
                          path, pickle_protocol=2)
    deep = torch.load(path, weights_only=True)  # live
    with pytest.raises(RecursionError):
        copy.deepcopy(deep)
    with pytest.raises(CheckpointLoadError, match='nested more than 64 levels') as error:
        load_checkpoint_file(path)
    assert '\n' not in str(error.value)
