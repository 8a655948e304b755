"""What several test modules share: the repository root, running a tool as a subprocess, a
free local port, a ViT pair with the same weights, checks of written files. Data written to
disk in the real layouts is in :mod:`datagen`; tests import from these two modules only, never
from each other."""
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys
import types

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (as a string, for env vars)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def run_tool(args, cwd=ROOT, env=None, timeout=900):
    """Run ``args`` from the repository root with the package importable and one thread."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def ok(result):
    """The output of a finished tool run; fails with its output tail unless it exited 0."""
    assert result.returncode == 0, (result.stdout[-3000:] + '\n' + result.stderr[-5000:])
    return result.stdout + result.stderr


def make_vit_pair(arch, out_type, img_size=224, patch_size=16, seed=0):
    """The mmpretrain parent and the aligned subclass with the same weights.

    The weights are the architecture's own initialisation, with the q/k projections
    sharpened so that attention is far from uniform (otherwise any rule that keeps shares
    near the area share would pass).
    """
    from mmpretrain.models import VisionTransformer

    from mmtlalign.models import AlignedVisionTransformer
    torch.manual_seed(seed)
    kwargs = dict(arch=arch, img_size=img_size, patch_size=patch_size, out_type=out_type)
    parent = VisionTransformer(**kwargs)
    parent.init_weights()
    with torch.no_grad():
        for layer in parent.layers:
            c = layer.attn.embed_dims
            layer.attn.qkv.weight[:2 * c] *= 6.0
    aligned = AlignedVisionTransformer(**kwargs)
    aligned.load_state_dict(parent.state_dict())
    parent.eval()  # mmpretrain's BaseBackbone.train() returns None, so no chaining
    aligned.eval()
    return parent, aligned


def vit_grid_share(B, grid, seed):
    """(B, h*w) grid-aligned partner shares: one box, images in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    box = torch.zeros(B, *grid)
    box[:, 2:9, 3:11] = 1
    return box.flatten(1)[torch.randperm(B, generator=g)]


def saved_bytes(fn):
    """Bytes of the unique storages autograd saves while ``fn()`` runs."""
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def assert_png(path, min_size=(300, 200)):
    """``path`` is a PNG of at least ``min_size`` with real content (not blank)."""
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
        arr = np.asarray(im.convert('RGB'))
    assert arr.std() > 10, f'{path} looks blank'
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 30, f'{path} has almost no content'


def write_config(path, text, **kw):
    """Write ``text.format(**kw)`` to the ``pathlib.Path`` ``path``; returns it as a str."""
    path.write_text(text.format(**kw))
    return str(path)


def load_tool(relpath):
    """Import ``ROOT/relpath`` (a tool script) as a module."""
    import importlib.util
    name = 'tool_' + osp.basename(relpath)[:-3]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(relpath, argv):
    """Run a tool's main() in this process; (exit message or None)."""
    try:
        load_tool(relpath).main(argv)
    except SystemExit as e:
        return str(e.code)
    return None


def trained_tiny_deit(root):
    """Train the tiny DeiT of :func:`datagen.tiny_deit_config` for one epoch on a tiny ImageNet
    folder under ``root`` (in this process, through tools/train.py); a namespace with ``root``,
    ``data``, ``config``, ``options`` (the --cfg-options used) and ``genuine`` (its checkpoint)."""
    import types

    import datagen
    data = datagen.make_imagenet(str(root / 'data'), per_class=2)
    config = root / 'deit_tiny.py'
    config.write_text(datagen.tiny_deit_config('mmpretrain::deit/deit-tiny_4xb256_in1k.py'))
    work_dir = str(root / 'work')
    options = datagen.tiny_cls_options(data)
    assert run_main('tools/train.py', [str(config), '--work-dir', work_dir,
                                       '--cfg-options', *options]) is None
    return types.SimpleNamespace(root=root, data=data, config=str(config), options=options,
                                 genuine=osp.join(work_dir, 'epoch_1.pth'))


# ----------------------------------------------------------------------------- crafted pickles
class RawOpcodes:
    """Pickle opcodes that :func:`save_with_raw_opcodes` writes verbatim where this object
    stands (a payload spliced into an otherwise genuine checkpoint)."""

    def __init__(self, data):
        self.data = data


class _SplicingPickler(pickle._Pickler):
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, RawOpcodes):
            self.write(obj.data)
            return
        super().save(obj, save_persistent_id)


def save_with_raw_opcodes(obj, dst, **kwargs):
    """``torch.save`` with every :class:`RawOpcodes` inside ``obj`` written as its opcodes."""
    torch.save(obj, dst, pickle_module=types.SimpleNamespace(__name__='splice',
                                                             Pickler=_SplicingPickler), **kwargs)
