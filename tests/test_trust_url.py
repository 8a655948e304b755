"""Trust round 3 (issue 29), checkpoints that arrive by URL or by name: every scheme of
mmengine's ``CheckpointLoader`` ends in mmtlalign's safe loader.

A checkpoint served by an HTTP server on 127.0.0.1 (a real mmengine checkpoint trained here,
with a pickle payload spliced in, or Python config text in ``message_hub.runtime_info['cfg']``)
is given to mmengine's loaders, ``init_cfg=Pretrained``, ``load_from``, mmpretrain's
``get_model`` and inferencer, mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer``, by
``http://``, ``open-mmlab://``, ``mmcls://``, ``torchvision://`` and from torch.hub's cache.
Each attack is first shown live through mmengine's own URL loader; a payload that ran would
write ``marker``. ``TORCH_HOME`` is a fresh folder per test, so is torch.hub's cache.
"""
import functools
import hashlib
import http.server
import os
import os.path as osp
import shutil
import struct
import subprocess
import threading

import pytest
import torch

from helpers import PY, ROOT, RawOpcodes, run_main, save_with_raw_opcodes, trained_tiny_deit


# ----------------------------------------------------------------------------- crafting
def _splice(genuine, marker, dst):
    """The genuine checkpoint with an ``os.system('touch marker')`` pickle payload (the
    classic ``__reduce__`` route) in ``meta``."""
    command = f'touch {marker}'.encode()
    payload = (b'cposix\nsystem\n' + b'X' + struct.pack('<I', len(command)) + command
               + b'\x85R')
    ckpt = torch.load(genuine, weights_only=False)  # our own file
    ckpt['meta']['note'] = RawOpcodes(payload)
    save_with_raw_opcodes(ckpt, dst, pickle_protocol=2)
    return dst


def _config_code(genuine, marker, dst):
    """The genuine checkpoint with Python config text where the inferencers read it."""
    ckpt = torch.load(genuine, weights_only=False)  # our own file
    code = f"import os\nopen({marker!r}, 'w').write('pwned')\nx = 1\n"
    ckpt['meta']['cfg'] = code
    ckpt['message_hub']['runtime_info']['cfg'] = code
    torch.save(ckpt, dst)
    return dst


def _sha8(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()[:8]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return trained_tiny_deit(tmp_path_factory.mktemp('trust_url'))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(folder, base URL): files put in the folder are served at base URL + name."""
    folder = tmp_path / 'served'
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """A fresh torch.hub cache (and mmengine home) per test."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    return tmp_path / 'torch_home'


@pytest.fixture
def marker(tmp_path):
    path = str(tmp_path / 'PWNED')
    yield path
    assert not osp.exists(path), 'a checkpoint by URL ran code'


def _serve(server, src, name):
    folder, base = server
    shutil.copy(src, folder / name)
    return base + name


# ----------------------------------------------------------------------------- live attack
_LIVE = """
import os, sys
from mmengine.runner.checkpoint import _load_checkpoint
_load_checkpoint(sys.argv[1], map_location='cpu')  # downloads
print('download ran it:', os.path.exists(sys.argv[2]))
os.remove(sys.argv[2])
_load_checkpoint(sys.argv[1], map_location='cpu')  # torch.hub's cached copy
print('cached copy ran it:', os.path.exists(sys.argv[2]))
os.remove(sys.argv[2])
"""


def test_url_attack_is_live_without_mmtlalign_and_refused_with_it(env, server, tmp_path):
    """mmengine's http loader (torch.hub's ``load_state_dict_from_url``, ``weights_only=False``)
    runs the payload, and so does a copy planted in torch.hub's cache. Once mmtlalign is
    imported, mmengine's own loader functions, called directly, refuse it."""
    from mmengine.runner import checkpoint as mm

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    marker = str(tmp_path / 'PWNED')
    url = _serve(server, _splice(env.genuine, marker, str(tmp_path / 'c.pth')), 'evil.pth')
    result = subprocess.run([PY, '-c', _LIVE, url, marker], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert 'download ran it: True' in result.stdout, result.stderr[-2000:]
    assert 'cached copy ran it: True' in result.stdout, result.stderr[-2000:]
    for load in (mm.load_from_http, mm.load_url):
        with pytest.raises(CheckpointLoadError, match='weights-only loader refuses'):
            load(url, map_location='cpu')
    assert not osp.exists(marker)


# ----------------------------------------------------------------------------- every route
def _by_scheme(scheme, url, monkeypatch, tmp_path):
    """The name under which ``scheme`` reaches ``url``, its table pointed at our server."""
    from mmengine.runner import checkpoint as mm
    if scheme == 'http':
        return url
    if scheme == 'open-mmlab':  # the user's own table: MMENGINE_HOME/open_mmlab.json
        home = tmp_path / 'mmengine_home'
        home.mkdir(exist_ok=True)
        (home / 'open_mmlab.json').write_text(f'{{"tiny_deit": "{url}"}}')
        return 'open-mmlab://tiny_deit'
    if scheme == 'mmcls':
        monkeypatch.setattr(mm, 'get_mmcls_models', lambda: {'tiny_deit': url})
        return 'mmcls://tiny_deit'
    monkeypatch.setattr(mm, 'get_torchvision_models', lambda: {'tiny_deit': url})
    return 'torchvision://tiny_deit'


@pytest.mark.parametrize('scheme', ['http', 'open-mmlab', 'mmcls', 'torchvision'])
def test_every_scheme_refuses_a_crafted_checkpoint(env, server, marker, tmp_path, monkeypatch,
                                                   scheme):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    url = _serve(server, _splice(env.genuine, marker, str(tmp_path / 'c.pth')), 'evil.pth')
    name = _by_scheme(scheme, url, monkeypatch, tmp_path)
    with pytest.raises(CheckpointLoadError, match='weights-only loader refuses') as error:
        _load_checkpoint(name, map_location='cpu')
    assert '\n' not in str(error.value)


def test_planted_copy_in_torch_hub_cache_is_refused(env, server, marker, tmp_path, torch_home):
    """A file planted in torch.hub's cache under the URL's name is never unpickled."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    _splice(env.genuine, marker, str(cache / 'weights.pth'))
    with pytest.raises(CheckpointLoadError, match='weights-only loader refuses'):
        _load_checkpoint(server[1] + 'weights.pth', map_location='cpu')  # the server has none


@pytest.mark.parametrize('entry', ['load_checkpoint', 'init_cfg', 'get_model', 'load_from'])
def test_entry_points_refuse_a_crafted_checkpoint_by_url(env, server, marker, tmp_path, entry):
    from mmengine.config import Config

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    url = _serve(server, _splice(env.genuine, marker, str(tmp_path / 'c.pth')), 'evil.pth')
    if entry == 'load_from':
        error = run_main('tools/train.py', [env.config, '--work-dir', str(tmp_path / 'w'),
                                            '--cfg-options', *env.options, f'load_from={url}'])
        assert error and 'weights-only loader refuses' in error and '\n' not in error, error
        return
    cfg = Config.fromfile(env.config)
    cfg.merge_from_dict({'model.head.num_classes': 4})
    with pytest.raises(CheckpointLoadError, match='weights-only loader refuses'):
        if entry == 'load_checkpoint':
            from mmengine.runner import load_checkpoint
            from mmpretrain.registry import MODELS
            load_checkpoint(MODELS.build(cfg.model), url, map_location='cpu')
        elif entry == 'init_cfg':
            from mmpretrain.registry import MODELS
            cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=url,
                                               prefix='backbone.')
            MODELS.build(cfg.model).init_weights()
        else:
            from mmpretrain import get_model
            get_model(cfg, pretrained=url)


@pytest.mark.slow
def test_inferencers_refuse_crafted_checkpoints_by_url(env, server, tmp_path):
    """mmdet's DetInferencer, mmseg's MMSegInferencer (model=None: built from the checkpoint's
    config text) and mmpretrain's ImageClassificationInferencer, given ``weights=URL`` in a
    fresh process that imported mmtlalign: the pickle payload is refused, the config code is
    never executed. Shown live first: the same URLs through mmengine's own http loader."""
    pickled = str(tmp_path / 'PWNED_pickle')
    config_code = str(tmp_path / 'PWNED_cfg')
    evil = _serve(server, _splice(env.genuine, pickled, str(tmp_path / 'a.pth')), 'evil.pth')
    code = _serve(server, _config_code(env.genuine, config_code, str(tmp_path / 'b.pth')),
                  'code.pth')
    script = f"""
import mmtlalign
from mmengine.config import Config
from mmpretrain.apis import ImageClassificationInferencer
from mmdet.apis import DetInferencer
from mmseg.apis import MMSegInferencer
from mmtlalign.checkpoint import CheckpointLoadError
cfg = Config.fromfile({env.config!r})
cfg.model.head.num_classes = 4
builds = {{'det': lambda w: DetInferencer(model=None, weights=w),
          'seg': lambda w: MMSegInferencer(model=None, weights=w),
          'cls': lambda w: ImageClassificationInferencer(cfg, pretrained=w)}}
for name, build in builds.items():
    for url in ({evil!r}, {code!r}):
        try:
            build(url)
            print(name, 'built')
        except CheckpointLoadError as e:
            print(name, 'refused', 'one-line' if '\\n' not in str(e) else 'multi-line')
        except Exception as e:  # the code-text file: no config left to build from
            print(name, 'failed', type(e).__name__)
print('done')
"""
    env_vars = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    result = subprocess.run([PY, '-c', script], capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env=env_vars)
    out = result.stdout
    assert 'done' in out, result.stderr[-3000:]
    for name in ('det', 'seg', 'cls'):
        assert f'{name} refused one-line' in out, out  # the pickle payload, every inferencer
    assert not osp.exists(pickled) and not osp.exists(config_code), out
    # live: the same URLs through mmengine's http loader in a process without mmtlalign
    live = f"""
from mmengine.runner.checkpoint import load_from_http
from mmengine.config import Config
load_from_http({evil!r}, map_location='cpu')
ckpt = load_from_http({code!r}, map_location='cpu')
Config.fromstring(ckpt['message_hub']['runtime_info']['cfg'], '.py')  # what the inferencer does
"""
    result = subprocess.run([PY, '-c', live], capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env=dict(env_vars, TORCH_HOME=str(tmp_path / 'th2')))
    assert osp.exists(pickled) and osp.exists(config_code), result.stderr[-3000:]


# ----------------------------------------------------------------------------- genuine files
def test_genuine_checkpoint_by_url_loads_and_fills_the_model(env, server, tmp_path, torch_home):
    from mmengine.config import Config
    from mmengine.runner.checkpoint import _load_checkpoint
    from mmpretrain.registry import MODELS

    from mmtlalign.checkpoint.loader import load_checkpoint_file
    name = f'tiny_deit-{_sha8(env.genuine)}.pth'  # the model-zoo naming: a hash prefix
    url = _serve(server, env.genuine, name)
    ckpt = _load_checkpoint(url, map_location='cpu')
    local = load_checkpoint_file(env.genuine)
    assert ckpt['state_dict'].keys() == local['state_dict'].keys()
    assert all(torch.equal(ckpt['state_dict'][k], v) for k, v in local['state_dict'].items())
    assert osp.isfile(torch_home / 'hub' / 'checkpoints' / name)  # cached where torch.hub does
    cfg = Config.fromfile(env.config)
    cfg.merge_from_dict({'model.head.num_classes': 4})
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=url, prefix='backbone.')
    model = MODELS.build(cfg.model)
    model.init_weights()
    key = 'backbone.patch_embed.projection.weight'
    assert torch.equal(model.state_dict()[key], local['state_dict'][key])
    # load_from=URL: the Runner (and the fit check before it) trains on from it
    assert run_main('tools/train.py', [env.config, '--work-dir', str(tmp_path / 'w'),
                                       '--cfg-options', *env.options, f'load_from={url}']) is None
    assert osp.isfile(tmp_path / 'w' / 'epoch_1.pth')


def test_hash_prefix_in_the_file_name_is_checked(env, server, tmp_path, torch_home):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    wrong = 'f' * 8 if not _sha8(env.genuine).startswith('f') else '0' * 8
    url = _serve(server, env.genuine, f'tiny_deit-{wrong}.pth')
    with pytest.raises(CheckpointLoadError, match=f'does not match the SHA-256 prefix '
                                                  f"'{wrong}'") as error:
        _load_checkpoint(url, map_location='cpu')
    assert '\n' not in str(error.value)
    cache = torch_home / 'hub' / 'checkpoints'
    assert not any(f.name.startswith('tiny_deit') for f in cache.iterdir())  # nothing kept
    # a cached copy changed after a genuine download is refused as well
    good = f'tiny_deit-{_sha8(env.genuine)}.pth'
    url = _serve(server, env.genuine, good)
    _load_checkpoint(url, map_location='cpu')
    with open(cache / good, 'ab') as f:
        f.write(b'\0')
    with pytest.raises(CheckpointLoadError, match='cached copy .* does not match'):
        _load_checkpoint(url, map_location='cpu')


def test_s3_bytes_go_through_the_safe_loader(env, marker, tmp_path, monkeypatch):
    """``s3://`` reads bytes through mmengine's file backend (petrel is not installed here: a
    backend that serves local files stands in for it) and loads them like a file."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint import remote
    from mmtlalign.checkpoint.loader import CheckpointLoadError
    files = {'s3://bucket/evil.pth': _splice(env.genuine, marker, str(tmp_path / 'c.pth')),
             's3://bucket/genuine.pth': env.genuine}

    class Backend:
        def get(self, name):
            return open(files[name], 'rb').read()
    monkeypatch.setattr(remote, 'get_file_backend', lambda name, backend_args: Backend())
    with pytest.raises(CheckpointLoadError, match='weights-only loader refuses'):
        _load_checkpoint('s3://bucket/evil.pth', map_location='cpu')
    assert 'state_dict' in _load_checkpoint('s3://bucket/genuine.pth', map_location='cpu')


@pytest.mark.parametrize('name,expected', [
    ('pavi://model/x.pth', 'by pavi:// cannot be loaded safely'),
    ('s3://bucket/x.pth', "needs mmengine's 'petrel' file backend"),
    ('http://127.0.0.1:1/x.pth', 'cannot download'),
])
def test_schemes_we_cannot_serve_are_one_line(name, expected):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmtlalign.checkpoint.loader import CheckpointLoadError
    with pytest.raises(CheckpointLoadError, match=expected) as error:
        _load_checkpoint(name, map_location='cpu')
    assert '\n' not in str(error.value)


def test_every_registered_scheme_is_ours():
    """No prefix of mmengine's CheckpointLoader is left to mmengine's unpickling loaders."""
    from mmengine.runner.checkpoint import CheckpointLoader

    import mmtlalign  # noqa: F401
    from mmtlalign.checkpoint import remote
    ours = set(remote.SCHEMES.values())
    assert CheckpointLoader._schemes and all(
        loader in ours for loader in CheckpointLoader._schemes.values())
