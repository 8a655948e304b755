"""Trust round 3 (issue 29), the inputs: gzip bombs given to ``tools/demo.py --fmnist-source``,
``mmtlalign::`` names that lead out of ``configs/``, image decompression bombs in the robustness
sets and ``--data`` folders, and COCO json recursion bombs and oversized files.

Each attack is made here, small and real (a gzip stream, a PNG whose header claims 10^8 pixels,
a json nested 10^5 deep), and each test also shows that it is live without the check.
"""
import gzip
import json
import os
import os.path as osp
import re
import struct
import sys
import tracemalloc
import zlib

import pytest

import datagen
from helpers import ROOT, run_tool


def written_bytes():
    """Bytes this process has written so far (``wchar`` of /proc/self/io)."""
    with open('/proc/self/io') as f:
        return int(next(line for line in f if line.startswith('wchar')).split()[1])


# ----------------------------------------------------------------------------- item 10
def gzip_bomb(path, header, zeros):
    """A gzip'd idx stream: ``header`` then ``zeros`` zero bytes (compressed ~1000x)."""
    with gzip.open(path, 'wb', compresslevel=1) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(chunk)


def idx_header(magic, *dims):
    return struct.pack(f'>I{len(dims)}I', magic, *dims)


@pytest.fixture
def fmnist_source(tmp_path):
    src = str(tmp_path / 'src')
    datagen.write_fmnist(src, n_train=12, n_test=8, gz=True)
    return src


def test_gzip_bomb_is_refused_from_its_header(fmnist_source, tmp_path):
    """A 32 MB stream after 12 images' header (32 KB compressed): before, all of it was
    decompressed to disk and then found too long; now the copy stops one byte past the size
    the header gives, and a header claiming more than Fashion-MNIST's 60000 images is refused
    before any data are read."""
    from mmtlalign.datasets import fashion_mnist as fm
    bomb = osp.join(fmnist_source, 'train-images-idx3-ubyte.gz')
    gzip_bomb(bomb, idx_header(fm.IMAGE_MAGIC, 12, 28, 28), 32 << 20)
    assert osp.getsize(bomb) < 2 << 20

    # live without the check: the plain decompression the file got before writes all of it
    before = written_bytes()
    with gzip.open(bomb, 'rb') as fin, open(tmp_path / 'plain', 'wb') as fout:
        import shutil
        shutil.copyfileobj(fin, fout, length=1 << 20)
    assert written_bytes() - before > 32 << 20
    os.remove(tmp_path / 'plain')

    before = written_bytes()
    with pytest.raises(fm.FashionMNISTError, match=r'train-images-idx3-ubyte.gz: longer than '
                                                   r'its header \(\(12, 28, 28\)\) says'):
        fm.prepare_fashion_mnist(str(tmp_path / 'a'), source=fmnist_source, use_apt=False,
                                 allow_download=False)
    assert written_bytes() - before < 1 << 20  # one header's worth, not the stream
    assert not [n for n in os.listdir(tmp_path / 'a') if n.endswith('.partial')]

    # a header that claims 2^32-1 images (3.4 TB): refused before any data are read
    gzip_bomb(bomb, idx_header(fm.IMAGE_MAGIC, 2 ** 32 - 1, 28, 28), 1 << 20)
    before = written_bytes()
    with pytest.raises(fm.FashionMNISTError, match=r'claims 4294967295 images, more than '
                                                   r"Fashion-MNIST's larger split \(60000\)"):
        fm.prepare_fashion_mnist(str(tmp_path / 'b'), source=fmnist_source, use_apt=False,
                                 allow_download=False)
    assert written_bytes() - before < 64 << 10


@pytest.mark.slow  # a tools/demo.py process: ~20 s of imports on 2 busy cores
def test_demo_fmnist_source_bomb_is_one_line(fmnist_source, tmp_path):
    """The real entry point: tools/demo.py --fmnist-source DIR stops in one line, at once."""
    from mmtlalign.datasets import fashion_mnist as fm
    gzip_bomb(osp.join(fmnist_source, 't10k-labels-idx1-ubyte.gz'),
              idx_header(fm.LABEL_MAGIC, 8), 64 << 20)
    root = str(tmp_path / 'cache')
    result = run_tool([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--arms', 'cutmix',
                       '--seeds', '0', '--epochs', '1', '--fmnist-root', root,
                       '--fmnist-source', fmnist_source, '--work-dir', str(tmp_path / 'w')])
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert 't10k-labels-idx1-ubyte.gz: longer than its header ((8,)) says (16 bytes)' in error
    assert 'Traceback' not in result.stderr
    assert osp.getsize(osp.join(root, 'train-images-idx3-ubyte')) == 16 + 12 * 784
    assert not osp.exists(osp.join(root, 't10k-labels-idx1-ubyte.partial'))


def test_genuine_gzip_and_plain_sources_still_install(fmnist_source, tmp_path):
    from mmtlalign.datasets import fashion_mnist as fm
    assert fm.check_prepared(fm.prepare_fashion_mnist(
        str(tmp_path / 'gz'), source=fmnist_source, use_apt=False, allow_download=False)) == {
            'train': 12, 'test': 8}
    plain = str(tmp_path / 'plain-src')
    datagen.write_fmnist(plain, n_train=12, n_test=8, gz=False)
    assert fm.check_prepared(fm.prepare_fashion_mnist(
        str(tmp_path / 'plain'), source=plain, use_apt=False, allow_download=False))['test'] == 8


# ----------------------------------------------------------------------------- item 11
def test_scoped_names_stay_inside_configs(tmp_path):
    """``_base_ = 'mmtlalign::../../..<tmp>/x.py'`` or ``'mmtlalign::/abs/x.py'``: refused in
    one line; without the check the name joined onto configs/ reaches the planted file and
    mmengine runs it as a config."""
    from mmengine.config import Config

    from mmtlalign.cli import launch
    from mmtlalign.paths import project_root
    planted = tmp_path / 'elsewhere' / 'x.py'
    planted.parent.mkdir()
    planted.write_text("planted = 'ran'\n")
    configs = osp.join(project_root(), 'configs')
    for name in (osp.relpath(planted, configs), str(planted)):
        assert name.startswith(('..', '/'))
        # live without the check: configs/ joined with the name is the planted file
        assert Config.fromfile(osp.join(configs, name)).planted == 'ran'
        user = tmp_path / 'mine.py'
        user.write_text(f"_base_ = 'mmtlalign::{name}'\n")
        with pytest.raises(launch.UserInputError) as e:
            launch.load_config(str(user))
        assert f"'mmtlalign::{name}' points outside {configs}" in str(e.value)
        assert 'plain path' in str(e.value) and '\n' not in str(e.value)
        with pytest.raises(launch.UserInputError, match='points outside'):
            launch.load_config(f'mmtlalign::{name}')  # the CONFIG argument of the tools
    # names inside configs/ still resolve, '..' that stays inside too
    assert launch.load_config('mmtlalign::tlalign/../tlalign/deit-s_8xb128.py').model
    # a bare name is a file name, not a pattern
    with pytest.raises(launch.UserInputError, match='there is no'):
        launch.load_config('mmtlalign::*.py')


# ----------------------------------------------------------------------------- images
BOMB_SIDE = 10000  # 10^8 pixels: over Pillow's 89.5 M limit, under its 2x error threshold


def png_bomb(path, side=BOMB_SIDE):
    """A grey PNG of side x side black pixels: ~100 KB on disk, 300 MB once decoded to BGR."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 and the row
    idat = b''.join(comp.compress(row) for _ in range(side)) + comp.flush()
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0,
                                                                  0, 0, 0))
                + chunk(b'IDAT', idat) + chunk(b'IEND', b''))
    return str(path)


@pytest.fixture(scope='module')
def bomb_bytes(tmp_path_factory):
    path = png_bomb(tmp_path_factory.mktemp('bomb') / 'bomb.png')
    with open(path, 'rb') as f:
        return f.read()


def test_image_bomb_is_refused_from_its_header(bomb_bytes, tmp_path):
    """Live without the check: OpenCV (mmcv's default backend) decodes the 0.1 MB file into
    300 MB, and Pillow only warns. The checked loader refuses it from the header, for both."""
    import warnings

    import mmcv
    from PIL import Image

    from mmtlalign.engine.data_checks import CheckedLoadImageFromFile, DataError
    assert len(bomb_bytes) < 1 << 20
    img = mmcv.imfrombytes(bomb_bytes, backend='cv2')
    assert img.shape == (BOMB_SIDE, BOMB_SIDE, 3) and img.nbytes == 3 * 10 ** 8
    del img
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        img = mmcv.imfrombytes(bomb_bytes, backend='pillow')
    assert img.shape == (BOMB_SIDE, BOMB_SIDE, 3)
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    del img

    path = tmp_path / 'bomb.png'
    path.write_bytes(bomb_bytes)
    for backend in ('cv2', 'pillow'):
        loader = CheckedLoadImageFromFile(imdecode_backend=backend)
        with pytest.raises(DataError) as e:
            loader.transform(dict(img_path=str(path)))
        message = str(e.value)
        assert message.startswith('image too large to decode: 10000x10000 = 100000000 pixels, '
                                  'over the limit of 89478485')
        assert str(path) in message and '\n' not in message
        # skip mode logs and skips
        assert CheckedLoadImageFromFile(imdecode_backend=backend, on_error='skip').transform(
            dict(img_path=str(path))) is None
    # a genuine large image passes under a raised limit
    assert CheckedLoadImageFromFile(max_pixels=None).transform(
        dict(img_path=str(path)))['img_shape'] == (BOMB_SIDE, BOMB_SIDE)
    # Pillow's own error (beyond twice its limit) is one line too
    huge = png_bomb(tmp_path / 'huge.png', side=14000)
    with pytest.raises(DataError, match=r'^image too large to decode \(Image size'):
        CheckedLoadImageFromFile().transform(dict(img_path=huge))


def _robustness_root(tmp_path, bomb_bytes):
    """ImageNet-V2's layout (folders are class indices) with one planted bomb."""
    root = tmp_path / 'imagenet-v2'
    datagen.make_imagenet(str(tmp_path / 'inet'), num_classes=2, per_class=2, size=32)
    for label in range(2):
        (root / str(label)).mkdir(parents=True)
        src = tmp_path / 'inet' / 'train' / f'n{label:08d}'
        for i, name in enumerate(sorted(os.listdir(src))):
            (root / str(label) / f'{i}.jpeg').write_bytes((src / name).read_bytes())
    (root / '1' / 'zz.png').write_bytes(bomb_bytes)
    return str(root)


def test_robustness_set_refuses_an_image_bomb(tmp_path, bomb_bytes):
    """The evaluation stages build the robustness sets with the config's test pipeline and no
    Runner (no DataCheckHook): the dataset itself guards its loader."""
    from mmpretrain.registry import DATASETS, TRANSFORMS

    import mmtlalign  # noqa: F401  (registers the datasets)
    from mmtlalign.engine.data_checks import DataError
    root = _robustness_root(tmp_path, bomb_bytes)
    pipeline = [dict(type='LoadImageFromFile', imdecode_backend='pillow'),
                dict(type='PackInputs')]
    ds = DATASETS.build(dict(type='ImageNetV2', data_root=root, pipeline=pipeline))
    assert type(ds.pipeline.transforms[0]).__name__ == 'CheckedLoadImageFromFile'
    assert ds.pipeline.transforms[0].imdecode_backend == 'pillow'  # its settings kept
    assert tuple(ds[0]['inputs'].shape) == (3, 32, 32)  # genuine images load
    bomb = next(i for i in range(len(ds)) if ds.get_data_info(i)['img_path'].endswith('.png'))
    # live without the check: the plain loader decodes it
    plain = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    assert plain(dict(ds.get_data_info(bomb)))['img'].nbytes == 3 * 10 ** 8
    with pytest.raises(DataError, match=r'^image too large to decode: 10000x10000'):
        ds[bomb]


def test_data_folder_bomb_through_the_data_check_hook(tmp_path, bomb_bytes):
    """A ``--data`` folder (tools/demo.py: mmpretrain's CustomDataset, plain loaders in the
    pipeline): the DataCheckHook of the demo and TL-Align configs swaps in the checked loader,
    with its ``max_pixels``."""
    from mmpretrain.registry import DATASETS

    from mmtlalign.engine.data_checks import DataCheckHook, DataError
    root = datagen.make_imagenet(str(tmp_path / 'data'), num_classes=2, per_class=2, size=32)
    (tmp_path / 'data' / 'train' / 'n00000001' / 'zz.png').write_bytes(bomb_bytes)
    ds = DATASETS.build(dict(type='CustomDataset', data_root=root, data_prefix='train',
                             pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
    hook = DataCheckHook()
    assert hook._guard_pipeline(ds)
    with pytest.raises(DataError, match='over the limit of 89478485'):
        ds[len(ds) - 1]
    assert DataCheckHook(max_pixels=10 ** 8)._guard_pipeline(ds)  # a raised limit passes it
    assert ds[len(ds) - 1]['inputs'].shape[-1] == BOMB_SIDE


# ----------------------------------------------------------------------------- COCO json
def _coco_cfg(ann_file):
    from mmengine.config import Config
    return Config(dict(default_scope='mmdet', train_dataloader=dict(dataset=dict(
        type='CocoDataset', ann_file=ann_file, metainfo=dict(classes=('a',))))))


def test_coco_json_recursion_bomb_is_one_line(tmp_path):
    from mmtlalign.cli.coco_check import check_coco_classes
    from mmtlalign.errors import UserInputError
    path = tmp_path / 'deep.json'
    path.write_text('{"images": ' + '[' * 100000 + ']' * 100000 + '}')
    with pytest.raises(RecursionError):  # live: what json (and mmdet's COCO api) raise
        with open(path) as f:
            json.load(f)
    with pytest.raises(UserInputError) as e:
        check_coco_classes(_coco_cfg(str(path)), ['train_dataloader'])
    assert 'is nested deeper than any COCO json' in str(e.value)
    assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_coco_json_that_would_not_fit_in_memory(tmp_path, monkeypatch):
    """``[{}, {}, ...]``: 3 MB on disk, ~75 MB parsed (measured here). With 50 MB available
    the check refuses it before parsing; a genuine small COCO file passes."""
    from mmtlalign.cli import coco_check
    from mmtlalign.errors import UserInputError
    path = tmp_path / 'huge.json'
    path.write_text('[' + ','.join(['{}'] * 1_000_000) + ']')
    tracemalloc.start()
    with open(path) as f:
        json.load(f)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    budget = 50 << 20
    assert peak > budget  # live: the parse needs more than the memory there is
    assert coco_check.json_memory_estimate(str(path)) >= peak  # the estimate bounds it
    monkeypatch.setattr(coco_check, 'memory_available', lambda: budget)
    with pytest.raises(UserInputError) as e:
        coco_check.check_coco_classes(_coco_cfg(str(path)), ['train_dataloader'])
    assert re.search(r'parsing its 3 MiB of json would need about \d+ MiB of memory, and 50 MiB '
                     'is available', str(e.value)), e.value
    assert '\n' not in str(e.value)
    coco = datagen.make_coco(str(tmp_path / 'coco'))
    ann = osp.join(coco, 'annotations', 'instances_train2017.json')
    assert coco_check._read_coco(ann, 'train_dataloader')['categories']  # a genuine file


def test_evaluation_loaders_refuse_an_image_bomb(tmp_path, bomb_bytes):
    """The evaluation stages' loaders (no Runner, no DataCheckHook) on a ``--data``-style
    clean test set: the Evaluator makes its loader the checked one. (The model is not needed
    for the loader, so none is built here.)"""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmtlalign.engine.data_checks import DataError
    from mmtlalign.evaluation.evaluator import Evaluator
    init_default_scope('mmpretrain')  # as the evaluation CLI does
    root = datagen.make_imagenet(str(tmp_path / 'data'), num_classes=2, per_class=2, size=32)
    (tmp_path / 'data' / 'train' / 'n00000001' / 'zz.png').write_bytes(bomb_bytes)
    ev = Evaluator.__new__(Evaluator)
    ev.cfg, ev.batch_size = Config(dict(default_scope='mmpretrain', test_dataloader=dict(
        batch_size=8, num_workers=0, collate_fn=dict(type='default_collate'),
        dataset=dict(type='CustomDataset', data_root=root, data_prefix='train',
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='Resize', scale=(32, 32)),
                               dict(type='PackInputs')])))), None
    with pytest.raises(DataError, match=r'^image too large to decode: 10000x10000'):
        list(ev.loader())
