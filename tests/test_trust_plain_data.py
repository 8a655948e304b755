"""Trust round 2 (issue 18): no string, path or object from a checkpoint may act.

The weights-only loader refuses pickle gadgets (tests/test_trust.py). These attacks use only
what it lets through, or what torch's process-wide allow-list would:

1. ``meta['config']`` as Python source: ``Runner.resume`` executes it;
2. ``message_hub.runtime_info['cfg']`` as Python source: mmengine's inferencers execute it;
3. ``runtime_info['best_ckpt']`` = a victim folder: ``CheckpointHook`` deletes it;
4. ``traceback.FrameSummary(path, n)``: allow-listed process-wide by torch.distributed, reads
   a local file at load time;
5. a numpy dtype with a hidden object field, a stride-0 tensor, allow-list side effects.

Every crafted file is a real checkpoint trained here, edited by the test. A payload that ran
would write ``marker``; every test checks it did not, and that the victims are intact.
"""
import os
import os.path as osp
import pickle
import shutil
import struct
import subprocess
import threading
import traceback
import warnings

import numpy as np
import pytest
import torch

import datagen
from helpers import PY, ROOT, run_main, trained_tiny_deit


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return trained_tiny_deit(tmp_path_factory.mktemp('trust2'))


class Victims:
    """A code payload's marker file, and a folder and file that mmengine must not delete."""

    def __init__(self, tmp_path):
        self.marker = str(tmp_path / 'PWNED')
        self.folder = tmp_path / 'precious'
        self.folder.mkdir()
        (self.folder / 'thesis.txt').write_text('years of work')
        self.code = f"import os\nopen({self.marker!r}, 'w').write('pwned')\nx = 1\n"

    def check(self):
        assert not osp.exists(self.marker), 'config text from a checkpoint was executed'
        assert (self.folder / 'thesis.txt').read_text() == 'years of work', 'victim deleted'


@pytest.fixture
def victims(tmp_path):
    v = Victims(tmp_path)
    yield v
    v.check()


def poison(genuine, victims, dst):
    """The genuine checkpoint with every plain-data payload: config code in all three places
    mmengine reads it, a victim folder as the best checkpoint, traversing keep ids."""
    ckpt = torch.load(genuine, weights_only=False)  # our own file
    ckpt['meta']['config'] = victims.code
    ckpt['meta']['cfg'] = victims.code
    info = ckpt['message_hub']['runtime_info']
    info['cfg'] = victims.code
    info['best_ckpt'] = str(victims.folder)
    info['keep_ckpt_ids'] = ['/../../precious/thesis']
    torch.save(ckpt, dst)
    return str(dst)


# ----------------------------------------------------------------------------- the rules
def test_genuine_config_text_is_regenerated_as_the_same_config(env):
    """The text mmengine gets back is ours, and means what the genuine text meant."""
    from mmengine.config import Config

    from mmtlalign.checkpoint.inert import plain_config_text
    text = torch.load(env.genuine, weights_only=False)['meta']['cfg']
    ours = plain_config_text(text)
    assert ours != text
    assert Config.fromstring(ours, '.py').to_dict() == Config.fromstring(text, '.py').to_dict()


@pytest.mark.parametrize('text', [
    "import os\nx = 1\n",
    "x = __import__('os').system('true')\n",
    "x = dict(a=open('/etc/hostname').read())\n",
    "dict = eval\nx = dict('1')\n",
    "_base_ = ['/tmp/evil.py']\nx = 1\n",
    "x = [i for i in range(3)]\n",
    "x = f'{1}'\n",
])
def test_config_text_that_is_not_plain_data_never_reaches_mmengine(tmp_path, text):
    from mmtlalign.checkpoint.inert import UNTRUSTED_KEY, neutralise, plain_config_text
    ckpt = {'meta': {'cfg': text}, 'message_hub': {'runtime_info': {'cfg': text}}}
    changed = neutralise(ckpt, str(tmp_path / 'x.pth'))
    if text.startswith('_base_'):  # plain data, but mmengine would load that file: dropped
        assert plain_config_text(text) == 'x = 1\n' and not changed
        return
    assert changed and 'cfg' not in ckpt['meta'] and 'cfg' not in ckpt['message_hub'][
        'runtime_info']
    assert ckpt['meta'][UNTRUSTED_KEY] == text  # kept for a person to read


def test_custom_imports_only_of_openmmlab_packages_survive():
    from mmtlalign.checkpoint.inert import plain_config_text
    ours = plain_config_text("custom_imports = dict(imports=['mmtlalign', 'mmdet.models'])\n"
                             "a = dict(imports=['x'])\n")
    assert "custom_imports = dict(imports=['mmtlalign', 'mmdet.models'])" in ours
    assert 'custom_imports' not in plain_config_text(
        "custom_imports = dict(imports=['antigravity'])\n")


def test_best_checkpoint_paths_outside_the_checkpoint_folder_are_dropped(tmp_path):
    from mmtlalign.checkpoint.inert import neutralise
    ckpt_path = str(tmp_path / 'run' / 'epoch_3.pth')
    good = str(tmp_path / 'run' / 'best_accuracy_top1_epoch_2.pth')
    info = {'best_ckpt': str(tmp_path), 'best_ckpt_top5': good,
            'best_ckpt_x': str(tmp_path / 'run' / '..' / 'run2' / 'best_a.pth'),
            'keep_ckpt_ids': [1, 2]}
    changed = neutralise({'message_hub': {'runtime_info': info}}, ckpt_path)
    assert info == {'best_ckpt_top5': good, 'keep_ckpt_ids': [1, 2]} and len(changed) == 2


# ----------------------------------------------------------------------------- entry points
@pytest.mark.slow
@pytest.mark.parametrize('how', ['--resume PATH', 'load_from + resume', 'planted work dir'])
def test_resume_executes_nothing_and_deletes_nothing(env, victims, tmp_path, how):
    work = tmp_path / 'w'
    crafted = poison(env.genuine, victims, tmp_path / 'crafted.pth')
    argv = [env.config, '--work-dir', str(work)]
    options = [*env.options, 'train_cfg.max_epochs=2', 'resume_schedule=config',
               'default_hooks.checkpoint.save_best=accuracy/top1',
               'default_hooks.checkpoint.max_keep_ckpts=1']
    if how == '--resume PATH':
        argv += ['--resume', crafted]
    elif how == 'load_from + resume':
        options += [f'load_from={crafted}', 'resume=True']
    else:
        work.mkdir()
        shutil.copy(crafted, work / 'epoch_1.pth')
        (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
        argv += ['--resume']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert run_main('tools/train.py', argv + ['--cfg-options', *options]) is None
    assert osp.isfile(work / 'epoch_2.pth')  # training went on from the checkpoint
    assert any(str(w.message).startswith('checkpoint') and 'made inert' in str(w.message)
               for w in caught)
    victims.check()


@pytest.mark.slow
def test_other_entry_points_execute_nothing(env, victims, tmp_path):
    """tools/test.py, init_cfg, get_model, the converter and the analysis tool."""
    from mmengine.config import Config
    from mmpretrain import get_model
    from mmpretrain.registry import MODELS

    from mmtlalign.checkpoint.loader import load_checkpoint_file
    crafted = poison(env.genuine, victims, tmp_path / 'crafted.pth')
    assert run_main('tools/test.py', [env.config, crafted, '--work-dir', str(tmp_path / 't'),
                                      '--cfg-options', *env.options]) is None
    cfg = Config.fromfile(env.config)
    cfg.merge_from_dict({'model.head.num_classes': 4})
    get_model(cfg, pretrained=crafted)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=crafted, prefix='backbone.')
    MODELS.build(cfg.model).init_weights()
    out = str(tmp_path / 'backbone.pth')
    assert run_main('tools/model_converters/cls_to_backbone.py', [crafted, out]) is None
    meta = load_checkpoint_file(out)['meta']
    assert set(meta) <= {'epoch', 'iter', 'seed', 'experiment_name', 'time',
                         'mmengine_version', 'mmtlalign_converted'}, meta
    assert run_main('tools/analysis/token_fluctuation.py', [
        env.config, crafted, '--out-dir', str(tmp_path / 'tf'), '--num-batches', '1',
        '--cfg-options', *[o for o in env.options if o.startswith(('val_', 'model.'))]]) is None


@pytest.mark.slow
def test_inferencers_execute_no_config_text(env, victims, tmp_path):
    """mmdet's, mmseg's and mmpretrain's inferencers, in a process that imported mmtlalign
    (model=None makes mmengine's inferencer build the model from the checkpoint's text)."""
    crafted = poison(env.genuine, victims, tmp_path / 'crafted.pth')
    script = f"""
import mmtlalign
from mmengine.config import Config
from mmpretrain.apis import ImageClassificationInferencer
cfg = Config.fromfile({env.config!r})
cfg.model.head.num_classes = 4
ImageClassificationInferencer(cfg, pretrained={crafted!r})
from mmdet.apis import DetInferencer
from mmseg.apis import MMSegInferencer
for build in (lambda: DetInferencer(model=None, weights={crafted!r}),
              lambda: MMSegInferencer(model=None, weights={crafted!r})):
    try:
        build()
    except Exception as e:  # no config left to build from
        print('refused:', type(e).__name__)
print('done')
"""
    result = subprocess.run([PY, '-c', script], capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.stdout.count('refused:') == 2 and 'done' in result.stdout, result.stderr[-3000:]


# ----------------------------------------------------------------------------- refused files
def _raw_pickle(payload_opcodes, dst):
    """A torch zip checkpoint whose data.pkl is ``{'state_dict': {}, 'meta': <payload>}``."""
    import types as _t

    class Raw:
        pass

    class Splice(pickle._Pickler):
        def save(self, obj, save_persistent_id=True):
            if isinstance(obj, Raw):
                self.write(payload_opcodes)
                return
            super().save(obj, save_persistent_id)

    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': Raw()}, dst,
               pickle_module=_t.SimpleNamespace(__name__='splice', Pickler=Splice),
               pickle_protocol=2)
    return str(dst)


def _frame_summary(path, line):
    def s(t):
        data = t.encode()
        return b'X' + struct.pack('<I', len(data)) + data
    return (b'ctraceback\nFrameSummary\n' + s(path) + b'K' + bytes([line]) + s('f')
            + b'\x87R')


def test_frame_summary_reads_no_local_file(tmp_path):
    secret = tmp_path / 'secret.txt'
    secret.write_text('the secret line\n')
    crafted = _raw_pickle(_frame_summary(str(secret), 1), tmp_path / 'fs.pth')
    import torch.distributed  # noqa: F401  (allow-lists FrameSummary process-wide)
    leaked = torch.load(crafted, weights_only=True)['meta']  # torch alone: the attack is live
    assert leaked.line == 'the secret line'
    from mmtlalign.checkpoint.loader import CheckpointLoadError, load_checkpoint_file
    with pytest.raises(CheckpointLoadError, match='FrameSummary') as e:
        load_checkpoint_file(crafted)
    assert 'the secret line' not in str(e.value)
    error = run_main('tools/model_converters/cls_to_backbone.py', [crafted, str(tmp_path / 'o')])
    assert 'refuses' in error and 'the secret line' not in error and '\n' not in error


def test_stride_zero_tensor_is_refused(tmp_path):
    from mmtlalign.checkpoint.loader import CheckpointLoadError, load_checkpoint_file
    path = tmp_path / 'expand.pth'
    torch.save({'blocks.0.attn.qkv.weight': torch.zeros(1).expand(4096, 4096)}, path)
    assert path.stat().st_size < 4096  # 4 bytes of storage for 16M elements
    with pytest.raises(CheckpointLoadError, match='overlap'):
        load_checkpoint_file(str(path))
    error = run_main('tools/model_converters/timm_to_mmpretrain.py',
                     [str(path), str(tmp_path / 'o')])
    assert 'overlap' in error and '\n' not in error
    torch.save({'w': torch.zeros(4, 6)[:, ::2], 'v': torch.zeros(3).expand(1, 3)}, path)
    load_checkpoint_file(str(path))  # views that fit in their storage are fine


class _Reduce:
    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _hidden_object_array(dst):
    """An array whose float64 dtype was given an object field by BUILD (flags say none)."""
    from numpy.core.multiarray import _reconstruct
    obj_dtype = _Reduce(np.dtype, ('O8', False, True))  # no BUILD for this one
    state = (3, '|', None, ('a',), {'a': (obj_dtype, 0)}, 8, 1, 0)
    dtype = _Reduce(np.dtype, ('f8', False, True), state)
    array = _Reduce(_reconstruct, (np.ndarray, (0,), b'b'), (1, (1,), dtype, False, b'A' * 8))
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'a': array}}, dst,
               pickle_protocol=2)
    return str(dst)


@pytest.mark.slow
def test_numpy_dtype_with_hidden_object_field_is_refused(tmp_path):
    crafted = _hidden_object_array(tmp_path / 'dtype.pth')
    # in a subprocess: if the loader let it through, reading the array could crash the process
    script = f"""
import mmtlalign
from mmtlalign.checkpoint.loader import CheckpointLoadError, checkpoint_globals
from mmtlalign.checkpoint.loader import load_checkpoint_file
import torch
with checkpoint_globals():  # the allow-list alone, without the checks
    raw = torch.load({crafted!r}, weights_only=True)
print('raw fields:', raw['meta']['a'].dtype.fields is not None)
try:
    load_checkpoint_file({crafted!r})
    print('loaded')
except CheckpointLoadError as e:
    print('refused:', e)
"""
    result = subprocess.run([PY, '-c', script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert 'raw fields: True' in result.stdout, result.stdout + result.stderr[-2000:]
    assert 'refused:' in result.stdout and 'not a plain numeric dtype' in result.stdout


# ----------------------------------------------------------------------------- allow-list
def test_our_loads_keep_the_users_allow_list_and_leave_other_threads_alone(env, tmp_path):
    from mmtlalign.checkpoint.loader import checkpoint_globals, load_checkpoint_file

    class UserThing:  # a class of the user's, allowed by the user for their own files
        pass

    UserThing.__module__, UserThing.__qualname__ = __name__, 'UserThing'
    globals()['UserThing'] = UserThing
    user_file = tmp_path / 'user.pth'
    torch.save({'thing': UserThing()}, user_file)
    # np.ndarray is on our list too: leaving our load must not take the user's entry away
    torch.serialization.add_safe_globals([UserThing, np.ndarray])
    try:
        load_checkpoint_file(env.genuine)
        assert {UserThing, np.ndarray} <= set(torch.serialization.get_safe_globals())
        inside, go = threading.Event(), threading.Event()

        def our_load():
            with checkpoint_globals():
                inside.set()
                go.wait(60)

        thread = threading.Thread(target=our_load)
        thread.start()
        inside.wait(60)
        try:  # while our list is active in that thread, this one still has the user's
            assert type(torch.load(user_file, weights_only=True)['thing']) is UserThing
        finally:
            go.set()
            thread.join(60)
        with checkpoint_globals():  # and inside ours, the user's list does not apply
            with pytest.raises(pickle.UnpicklingError, match='UserThing'):
                torch.load(user_file, weights_only=True)
    finally:
        torch.serialization.clear_safe_globals()
        _restore_torch_distributed_globals()


def _restore_torch_distributed_globals():
    import builtins
    torch.serialization.add_safe_globals(
        [t for t in vars(builtins).values() if isinstance(t, type)
         and issubclass(t, BaseException)] + [traceback.StackSummary, traceback.FrameSummary])


# ----------------------------------------------------------------------------- fit, errors
def test_pretrained_init_of_another_width_is_refused(env, tmp_path):
    from mmpretrain.registry import MODELS

    from mmtlalign.errors import UserInputError
    wide = MODELS.build(dict(type='AlignedVisionTransformer', img_size=64, patch_size=16,
                             arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                                       feedforward_channels=128)))
    ckpt = tmp_path / 'wide.pth'
    torch.save({'state_dict': wide.state_dict()}, ckpt)
    narrow = MODELS.build(dict(type='AlignedVisionTransformer', img_size=64, patch_size=16,
                               arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                         feedforward_channels=96),
                               init_cfg=dict(type='Pretrained', checkpoint=str(ckpt))))
    with pytest.raises(UserInputError, match='shape mismatch') as e:
        narrow.init_weights()
    assert '\n' not in str(e.value)


def test_unknown_optimizer_is_named(env, tmp_path):
    error = run_main('tools/train.py', [env.config, '--work-dir', str(tmp_path / 'w'),
                                        '--cfg-options', *env.options,
                                        'optim_wrapper.optimizer.type=AdamWW'])
    assert "'AdamWW' is not a registered optimizer" in error and 'AdamW' in error


def test_lock_failure_of_the_file_system_is_not_called_a_live_run(tmp_path, monkeypatch):
    import errno
    import fcntl

    from mmtlalign.cli.work_dir_lock import hold_work_dir

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, 'flock', no_locks)  # what an NFS mount without lockd answers
    with pytest.warns(UserWarning, match='does not support flock'):
        with hold_work_dir(str(tmp_path)):
            pass


def _mount_tmpfs(path, size):
    path.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs here ({result.stderr.strip()}); needs root')
    return path


@pytest.mark.slow
@pytest.mark.parametrize('case', ['read-only', 'full'])
def test_read_only_or_full_work_dir_is_one_line_and_keeps_checkpoints(env, tmp_path, case):
    disk = _mount_tmpfs(tmp_path / 'disk', '1m' if case == 'full' else '4m')
    try:
        work = disk / 'w'
        if case == 'read-only':
            subprocess.run(['mount', '-o', 'remount,ro', str(disk)], check=True)
        # our recipe, whose AtomicCheckpointHook never leaves a half-written checkpoint
        # (mmengine's plain CheckpointHook, which the mmpretrain recipes use, does)
        config = tmp_path / 'ours.py'
        config.write_text(datagen.tiny_deit_config(
            osp.join(ROOT, 'configs', 'tlalign', 'deit-s_8xb128.py'), num_classes=4))
        result = datagen.train_tool(str(config), str(work), env.data,
                                    options=['train_cfg.max_epochs=3'])
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        expected = 'read-only' if case == 'read-only' else 'no space left'
        assert last.startswith('error: cannot write') and expected in last, result.stderr[-2000:]
        assert 'Traceback' not in result.stderr
        from mmtlalign.checkpoint.loader import load_checkpoint_file
        for ckpt in work.glob('*.pth') if work.is_dir() else []:
            load_checkpoint_file(str(ckpt))  # whatever was saved is complete
    finally:
        subprocess.run(['umount', '-l', str(disk)])
