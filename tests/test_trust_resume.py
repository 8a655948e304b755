"""Trust round 3 (issue 29): a resumed run takes counters from the checkpoint, never its
hyper-parameters, and refuses state of the wrong type or shape in one line.

Every checkpoint here is a real one trained here and edited by the test, resumed through
``tools/train.py --resume`` (the real Runner). Each attack is shown live with the check
accepted (``resume_schedule=checkpoint``: mmengine's own behaviour) or with the function that
mmengine / the hook would call on the value.
"""
import os
import os.path as osp
import random
import re
import signal
import subprocess
import warnings

import pytest
import torch

import datagen
from helpers import PY, ROOT, run_main


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """The tiny DeiT of :func:`datagen.tiny_deit_config`, a 2-epoch schedule, and its
    epoch-1 checkpoint (``genuine``): what an interrupted run leaves to resume."""
    import types
    root = tmp_path_factory.mktemp('trust_resume')
    data = datagen.make_imagenet(str(root / 'data'), per_class=2)
    config = root / 'deit_tiny.py'
    config.write_text(datagen.tiny_deit_config('mmpretrain::deit/deit-tiny_4xb256_in1k.py'))
    options = datagen.tiny_cls_options(data, epochs=2)
    assert run_main('tools/train.py', [str(config), '--work-dir', str(root / 'work'),
                                       '--cfg-options', *options]) is None
    return types.SimpleNamespace(config=str(config), options=options,
                                 genuine=str(root / 'work' / 'epoch_1.pth'))


def _edit(src, dst, change):
    ckpt = torch.load(src, weights_only=False)  # our own file
    change(ckpt)
    torch.save(ckpt, dst)
    return str(dst)


def _resume(env, ckpt, work_dir, *options, config=None):
    return run_main('tools/train.py', [
        config or env.config, '--resume', ckpt, '--work-dir', str(work_dir), '--cfg-options',
        *env.options, *options])


def _final_lr(work_dir):
    """The learning rate the resumed run ended its epoch with (its scheduler steps applied)."""
    ckpt = torch.load(osp.join(str(work_dir), 'epoch_2.pth'), weights_only=False)
    return ckpt['optimizer']['param_groups'][0]['lr']


def _scale_schedule(ckpt):
    for state in ckpt['param_schedulers']:
        state['base_values'] = [v * 1000 for v in state['base_values']]
        if 'eta_min' in state:
            state['eta_min'] *= 1000
        state['end'] += 1000


# ----------------------------------------------------------------------------- schedulers
@pytest.mark.slow
def test_tampered_scheduler_is_refused_and_genuine_resumes(env, tmp_path):
    genuine_dir = tmp_path / 'genuine'
    assert _resume(env, env.genuine, genuine_dir) is None
    assert osp.isfile(genuine_dir / 'epoch_2.pth')
    genuine_lr = _final_lr(genuine_dir)

    tampered = _edit(env.genuine, tmp_path / 'tampered.pth', _scale_schedule)
    error = _resume(env, tampered, tmp_path / 'refused')
    assert error and '\n' not in error, error
    assert 'resume: param_scheduler[0] (LinearLR) end is 1040 in the checkpoint but 40 as ' \
           'this config builds it' in error, error
    assert 'resume_schedule=config' in error and 'resume_schedule=checkpoint' in error, error
    assert not osp.exists(tmp_path / 'refused' / 'epoch_2.pth')

    # live: accepting the file's values (plain mmengine) trains at the planted learning rate
    accepted = tmp_path / 'accepted'
    assert _resume(env, tampered, accepted, 'resume_schedule=checkpoint') is None
    assert _final_lr(accepted) > 100 * genuine_lr, (_final_lr(accepted), genuine_lr)
    # the config's values with the file's counters: trains at the genuine learning rate
    kept = tmp_path / 'config'
    assert _resume(env, tampered, kept, 'resume_schedule=config') is None
    assert _final_lr(kept) == pytest.approx(genuine_lr, rel=1e-6)


@pytest.mark.slow
def test_longer_schedule_is_named_and_taken_from_the_config_when_asked(env, tmp_path):
    """Plain mmengine keeps the interrupted run's cosine (T_max=2) when max_epochs grows to 3;
    the check names it, and resume_schedule=config resumes into the longer one."""
    error = _resume(env, env.genuine, tmp_path / 'refused', 'train_cfg.max_epochs=3')
    assert error and 'CosineAnnealingLR) T_max is 2 in the checkpoint but 3' in error, error
    work = tmp_path / 'longer'
    assert _resume(env, env.genuine, work, 'train_cfg.max_epochs=3',
                   'resume_schedule=config') is None
    final = torch.load(work / 'epoch_3.pth', weights_only=False)['param_schedulers']
    start = torch.load(env.genuine, weights_only=False)['param_schedulers']
    assert [s.get('T_max') for s in final] == [None, 3]
    assert final[1]['_global_step'] == start[1]['_global_step'] + 2  # the file's counter


def test_scheduler_check_names_key_and_values():
    """Each hyper-parameter kind, against a scheduler built from a config; counters pass."""
    from mmengine.optim.scheduler import CosineAnnealingLR

    from mmtlalign.engine.resume_check import ResumeStateError, check_scheduler
    model = torch.nn.Linear(2, 2)

    def build():
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-4, by_epoch=False, end=10)
    built = build()
    stepped = build()
    for _ in range(3):
        stepped.optimizer.step()
        stepped.step()
    check_scheduler(built, stepped.state_dict(), 's')  # counters moved: fine
    for key, value in [('T_max', 11), ('eta_min', 0.1), ('end', 99), ('begin', 1),
                       ('by_epoch', True), ('base_values', [1.0])]:
        saved = dict(stepped.state_dict(), **{key: value})
        with pytest.raises(ResumeStateError, match=re.escape(f'{key} is {value!r} in the '
                                                             'checkpoint but ')):
            check_scheduler(built, saved, 's')
        check_scheduler(built, saved, 's', mode='checkpoint')  # accepted: kinds only
        check_scheduler(built, saved, 's', mode='config')  # the config's value put back
        assert saved[key] == built.state_dict()[key] and saved['last_step'] == 3
    with pytest.raises(ResumeStateError, match='last_step is .* keeps a int'):
        check_scheduler(built, dict(stepped.state_dict(), last_step='3'), 's', mode='config')
    with pytest.raises(ResumeStateError, match=r"attributes \['optimizer_hook'\]"):
        check_scheduler(built, dict(stepped.state_dict(), optimizer_hook=1), 's')


# ----------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize('case,expected', [
    ('weight_decay',
     r"param_groups\[0\] weight_decay is 50.0 in the checkpoint but [0-9.e-]+ as this config"),
    ('lr', r"param_groups\[0\] lr is .* in the checkpoint, outside \[0, "),
    ('state_shape', r"state\[0\]\['exp_avg'\] has shape \(7, 7\); parameter 0 has shape"),
    ('groups', r'has (\d+) parameter groups in the checkpoint and \d+ in the config'),
])
@pytest.mark.slow
def test_tampered_optimizer_state_is_refused(env, tmp_path, case, expected):
    def change(ckpt):
        groups = ckpt['optimizer']['param_groups']
        if case == 'weight_decay':
            groups[0]['weight_decay'] = 50.0
        elif case == 'lr':
            groups[0]['lr'] *= 1000 * 1000
        elif case == 'state_shape':
            ckpt['optimizer']['state'][0]['exp_avg'] = torch.zeros(7, 7)
        else:
            groups.append(dict(groups[0], params=[]))
    tampered = _edit(env.genuine, tmp_path / f'{case}.pth', change)
    error = _resume(env, tampered, tmp_path / 'w')
    assert error and re.search(expected, error) and '\n' not in error, error
    if case == 'state_shape':  # live: what torch does with it at the first step
        param = torch.nn.Parameter(torch.zeros(48, 3, 16, 16))
        optimizer = torch.optim.AdamW([param])
        state = optimizer.state_dict()
        state['state'] = {0: dict(step=torch.tensor(1.), exp_avg=torch.zeros(7, 7),
                                  exp_avg_sq=torch.zeros(7, 7))}
        optimizer.load_state_dict(state)
        param.grad = torch.ones_like(param)
        with pytest.raises(RuntimeError):
            optimizer.step()


# ----------------------------------------------------------------------------- random state
@pytest.fixture(scope='module')
def exact(env, tmp_path_factory):
    """A run with ExactResumeHook: (config, its epoch-1 checkpoint)."""
    root = tmp_path_factory.mktemp('exact')
    config = root / 'exact.py'
    config.write_text(f"_base_ = {env.config!r}\ncustom_hooks = [dict(type='ExactResumeHook')]\n")
    assert run_main('tools/train.py', [str(config), '--work-dir', str(root / 'w'),
                                       '--cfg-options', *env.options]) is None
    return str(config), str(root / 'w' / 'epoch_1.pth')


@pytest.mark.parametrize('case,expected', [
    ('torch_dtype', r"\['global'\].torch is a torch.float32 tensor of shape \(5,\), not the "
                    r'uint8 tensor of shape'),
    ('python_words', r"\['global'\].python is not a Mersenne Twister state"),
    ('numpy_pos', r"\['global'\].numpy is not a numpy MT19937 state"),
    ('ranks', r"\['ranks'\] is not a list of 1-1 per-process states"),
])
@pytest.mark.slow
def test_tampered_random_state_is_refused(env, exact, tmp_path, case, expected):
    import re

    from mmtlalign.engine.resume import set_global_rng_state
    config, genuine = exact

    def change(ckpt):
        state = ckpt['exact_resume']
        glob_state = state['ranks'][0]['global']
        if case == 'torch_dtype':
            glob_state['torch'] = torch.zeros(5)
        elif case == 'python_words':
            glob_state['python'] = (3, (1, 2, 3), None)
        elif case == 'numpy_pos':
            glob_state['numpy']['pos'] = 10 ** 9
        else:
            state['ranks'] = state['ranks'] * 2
    tampered = _edit(genuine, tmp_path / 'rng.pth', change)
    error = _resume(env, tampered, tmp_path / 'w', config=config)
    assert error and re.search(expected, error) and '\n' not in error, error
    assert 'remove ExactResumeHook' in error
    # live: the value handed to the generators raises deep inside them, or (numpy's position
    # past its 624 words) reads out of bounds: the process dies with SIGSEGV
    if case == 'numpy_pos':
        result = subprocess.run([PY, '-c', _SET_AND_DRAW, tampered], capture_output=True,
                                text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
        assert result.returncode == -signal.SIGSEGV, (result.returncode, result.stderr[-1000:])
        return
    ckpt = torch.load(tampered, weights_only=False)
    saved = (random.getstate(), torch.get_rng_state())
    try:
        if case != 'ranks':
            with pytest.raises((RuntimeError, ValueError, TypeError)):
                set_global_rng_state(ckpt['exact_resume']['ranks'][0]['global'])
    finally:
        random.setstate(saved[0])
        torch.set_rng_state(saved[1])


_SET_AND_DRAW = """
import sys, numpy, torch
from mmtlalign.engine.resume import set_global_rng_state
state = torch.load(sys.argv[1], weights_only=False)['exact_resume']['ranks'][0]['global']
set_global_rng_state(state)
print(numpy.random.rand(3))
"""


@pytest.mark.slow
def test_genuine_exact_resume_still_restores(env, exact, tmp_path):
    config, genuine = exact
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert _resume(env, genuine, tmp_path / 'w', config=config) is None
    assert osp.isfile(tmp_path / 'w' / 'epoch_2.pth')


# ----------------------------------------------------------------------------- config text
@pytest.mark.parametrize('text,kept', [
    ('x = {[1]: 2}\n', None),
    ("x = '{{_base_.a}}'\ny = '{{ fileDirname }}/a'\n", {'x': '{{_base_.a}}',
                                                          'y': '{{ fileDirname }}/a'}),
    ("filename = 'a.py'\nx = 1\n", None),
    ("custom_imports = dict(imports=['mmdet.no_such_module'])\nx = 1\n", {'x': 1}),
])
def test_config_text_edge_cases_become_data_or_are_removed(tmp_path, text, kept):
    """What mmengine raises on, or silently reads as other data (live: ``Config.fromstring`` of
    the file's text), is removed with a warning, or re-generated so that mmengine reads back
    exactly the data the text holds."""
    from mmengine.config import Config

    from mmtlalign.checkpoint.inert import UNTRUSTED_KEY, neutralise
    try:
        live = Config.fromstring(text, '.py').to_dict()
    except Exception as e:  # noqa: BLE001 - mmengine raises TypeError/KeyError/ImportError
        live = e
    assert isinstance(live, Exception) or live != kept, live
    ckpt = {'meta': {'config': text}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        changed = neutralise(ckpt, str(tmp_path / 'x.pth'))
    if kept is None:
        assert 'config' not in ckpt['meta'] and ckpt['meta'][UNTRUSTED_KEY] == text
        assert changed and 'not plain config data' in changed[0]
    else:
        assert Config.fromstring(ckpt['meta']['config'], '.py').to_dict() == kept


@pytest.mark.slow
def test_resume_with_edge_case_config_text_is_not_a_traceback(env, tmp_path):
    """``Runner.resume`` reads ``meta['config']`` with ``Config.fromstring``."""
    def change(ckpt):
        ckpt['meta']['config'] = 'x = {[1]: 2}\n'
        ckpt['meta']['cfg'] = "x = '{{_base_.a}}'\nfilename = 1\n"
        ckpt['message_hub']['runtime_info']['cfg'] = "x = '{{_base_.a}}'\n"
    edited = _edit(env.genuine, tmp_path / 'text.pth', change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert _resume(env, edited, tmp_path / 'w') is None
    assert osp.isfile(tmp_path / 'w' / 'epoch_2.pth')
    assert any('made inert' in str(w.message) for w in caught)
