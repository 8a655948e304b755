"""Fashion-MNIST out of the box: prepared from Debian's ``dataset-fashion-mnist`` package and read
with mmpretrain's own :class:`~mmpretrain.datasets.FashionMNIST`.

mmpretrain's ``FashionMNIST`` reads the four *uncompressed* idx files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``) from its ``data_root``; its ``download=True`` fetches them from the
Zalando S3 bucket. :func:`prepare_fashion_mnist` fills ``data_root`` instead from, in order:

1. the files already there (nothing to do);
2. a folder given as ``source`` holding the idx files, gzip'd or not;
3. the installed Debian package (``/usr/share/datasets/fashion-mnist/*.gz``);
4. the Debian package fetched without root: ``apt-get download dataset-fashion-mnist`` and
   ``dpkg-deb -x`` into a temporary folder;
5. mmpretrain's own download (md5-checked), announced as a fallback.

Every file is checked for the idx format (magic number, 28x28 images, as many labels as images,
labels 0-9) before it is put in place, so a truncated or foreign file fails with its name.
"""
import gzip
import os
import os.path as osp
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from urllib.parse import urljoin

from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import DATASETS

#: where the demo configs keep the prepared files (``$MMTLALIGN_CACHE`` as in tools/setup_env.sh)
DEFAULT_ROOT = '~/.cache/mmtlalign/fashion-mnist'
#: where Debian's ``dataset-fashion-mnist`` installs the gzip'd idx files
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'

#: the idx files mmpretrain's FashionMNIST reads, uncompressed, and their kind
FILES = {
    'train-images-idx3-ubyte': 'images',
    'train-labels-idx1-ubyte': 'labels',
    't10k-images-idx3-ubyte': 'images',
    't10k-labels-idx1-ubyte': 'labels',
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim
NUM_CLASSES = 10
#: images (or labels) in Fashion-MNIST's larger split; no idx header may claim more
MAX_COUNT = 60000


class FashionMNISTError(RuntimeError):
    """The files could not be prepared or are not Fashion-MNIST idx files."""


def default_root():
    """``$MMTLALIGN_CACHE/fashion-mnist``, by default ``~/.cache/mmtlalign/fashion-mnist``."""
    cache = os.environ.get('MMTLALIGN_CACHE')
    return osp.join(cache, 'fashion-mnist') if cache else osp.expanduser(DEFAULT_ROOT)


def _say(msg):
    print(f'[fashion-mnist] {msg}', file=sys.stderr, flush=True)


def is_prepared(root):
    """Whether ``root`` holds the four uncompressed idx files."""
    return all(osp.isfile(osp.join(root, name)) for name in FILES)


def read_idx_header(path):
    """(magic, dims) of an uncompressed idx file; :class:`FashionMNISTError` if it is none."""
    with open(path, 'rb') as f:
        return _read_header(path, f)


def _read_header(src, f):
    """(magic, dims) from the start of the (decompressed) idx stream ``f``, reading only the
    header."""
    head = f.read(4)
    if len(head) < 4:
        raise FashionMNISTError(f'{src}: empty or truncated, not an idx file.')
    magic = struct.unpack('>I', head)[0]
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise FashionMNISTError(
            f'{src}: magic number {magic:#010x} is not that of an idx uint8 image '
            f'({IMAGE_MAGIC:#010x}) or label ({LABEL_MAGIC:#010x}) file. Is it still '
            'gzip-compressed, or not Fashion-MNIST?')
    ndim = magic & 0xFF
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise FashionMNISTError(f'{src}: truncated idx header.')
    return magic, struct.unpack(f'>{ndim}I', raw)


def expected_size(src, kind, magic, dims):
    """Bytes of the uncompressed idx ``kind`` file ('images' or 'labels') that header
    ``(magic, dims)`` describes; :class:`FashionMNISTError` when it is not a Fashion-MNIST
    header: another kind, images other than 28x28, or more than :data:`MAX_COUNT` items (so a
    header cannot ask for more than Fashion-MNIST's own size)."""
    want = IMAGE_MAGIC if kind == 'images' else LABEL_MAGIC
    if magic != want:
        raise FashionMNISTError(f'{src}: expected an idx {kind} file (magic {want:#010x}), '
                                f'found magic {magic:#010x}.')
    if kind == 'images' and tuple(dims[1:]) != (28, 28):
        raise FashionMNISTError(f'{src}: images are {"x".join(map(str, dims[1:]))}, '
                                "Fashion-MNIST's are 28x28.")
    if dims[0] > MAX_COUNT:
        raise FashionMNISTError(f'{src}: its header claims {dims[0]} {kind}, more than '
                                f"Fashion-MNIST's larger split ({MAX_COUNT}).")
    return 4 + 4 * len(dims) + int(_prod(dims))


def check_idx_file(path, kind):
    """Check one uncompressed idx file of ``kind`` ('images' or 'labels'); returns its count."""
    magic, dims = read_idx_header(path)
    expected = expected_size(path, kind, magic, dims)
    actual = osp.getsize(path)
    if actual != expected:
        raise FashionMNISTError(f'{path}: {actual} bytes, but its header ({dims}) needs '
                                f'{expected}; the file is truncated or corrupt.')
    if kind == 'labels':
        with open(path, 'rb') as f:
            f.seek(8)
            labels = f.read()
        top = max(labels) if labels else 0
        if top >= NUM_CLASSES:
            raise FashionMNISTError(f'{path}: label {top} is out of range for the '
                                    f'{NUM_CLASSES} Fashion-MNIST classes.')
    return dims[0]


def _prod(dims):
    out = 1
    for d in dims:
        out *= d
    return out


def check_prepared(root):
    """Check all four files in ``root``; returns ``{'train': n, 'test': n}``."""
    counts = {}
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        n_img = check_idx_file(osp.join(root, f'{prefix}-images-idx3-ubyte'), 'images')
        n_lab = check_idx_file(osp.join(root, f'{prefix}-labels-idx1-ubyte'), 'labels')
        if n_img != n_lab:
            raise FashionMNISTError(f'{root}: {split} split has {n_img} images but {n_lab} '
                                    'labels.')
        counts[split] = n_img
    return counts


def _find_source_file(folder, name):
    for candidate in (name + '.gz', name):
        path = osp.join(folder, candidate)
        if osp.isfile(path):
            return path
    return None


def _copy_checked(src, kind, partial):
    """Decompress (or copy) ``src`` into ``partial``, its header first: the magic and the
    dimensions give the exact size of the file (:func:`expected_size`), and the copy stops one
    byte past it, so a gzip bomb, or a header that claims billions of images, costs at most
    Fashion-MNIST's own size, never the whole stream."""
    opener = gzip.open if src.endswith('.gz') else open
    try:
        with opener(src, 'rb') as fin, open(partial, 'wb') as fout:
            magic, dims = _read_header(src, fin)
            expected = expected_size(src, kind, magic, dims)
            fout.write(struct.pack(f'>I{len(dims)}I', magic, *dims))
            left = expected - (4 + 4 * len(dims)) + 1  # one byte more shows a longer stream
            while left > 0:
                chunk = fin.read(min(left, 1 << 20))
                if not chunk:
                    break
                fout.write(chunk)
                left -= len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise FashionMNISTError(f'cannot read {src}: {e}') from e
    if left == 0:
        raise FashionMNISTError(f'{src}: longer than its header ({dims}) says ({expected} '
                                'bytes); corrupt, or not Fashion-MNIST.')


def install_from_folder(folder, root):
    """Decompress (or copy) the four idx files from ``folder`` into ``root`` and check them.

    Each file's idx header is checked before its data are read (:func:`_copy_checked`).
    Returns False (and changes nothing) when ``folder`` lacks any of them.
    """
    sources = {name: _find_source_file(folder, name) for name in FILES}
    if not all(sources.values()):
        return False
    os.makedirs(root, exist_ok=True)
    total = sum(osp.getsize(p) for p in sources.values())
    done = 0
    for i, (name, src) in enumerate(sources.items(), 1):
        _say(f'  [{i}/{len(FILES)}] {osp.basename(src)} -> {osp.join(root, name)} '
             f'({done * 100 // max(total, 1)}% of {total / 1e6:.1f} MB done)')
        partial = osp.join(root, name + '.partial')
        try:
            _copy_checked(src, FILES[name], partial)
            check_idx_file(partial, FILES[name])
        except FashionMNISTError as e:
            if osp.lexists(partial):
                os.remove(partial)
            raise FashionMNISTError(f'{src}: {str(e).split(": ", 1)[-1]}') from None
        os.replace(partial, osp.join(root, name))
        done += osp.getsize(src)
    return True


def fetch_debian_package(dest):
    """``apt-get download`` the Debian package and unpack it with ``dpkg-deb -x`` into ``dest``
    (no root needed). Returns the folder with the gzip'd idx files; raises
    :class:`FashionMNISTError` with the reason when that is not possible here."""
    for tool in ('apt-get', 'dpkg-deb'):
        if shutil.which(tool) is None:
            raise FashionMNISTError(f'`{tool}` is not available (not a Debian/Ubuntu system)')
    _say(f'fetching Debian package {DEBIAN_PACKAGE} (31 MB) with `apt-get download` ...')
    proc = subprocess.run(['apt-get', 'download', DEBIAN_PACKAGE], cwd=dest, text=True,
                          stdout=sys.stderr, stderr=subprocess.PIPE, timeout=1800)
    debs = [f for f in os.listdir(dest) if f.startswith(DEBIAN_PACKAGE) and f.endswith('.deb')]
    if not debs:
        reason = (proc.stderr or '').strip().splitlines()
        raise FashionMNISTError('`apt-get download ' + DEBIAN_PACKAGE + '` failed: ' +
                                (reason[-1] if reason else f'exit code {proc.returncode}') +
                                ' (on Debian/Ubuntu, `sudo apt-get update` may help)')
    unpacked = osp.join(dest, 'unpacked')
    _say(f'unpacking {debs[0]} with `dpkg-deb -x` ...')
    proc = subprocess.run(['dpkg-deb', '-x', osp.join(dest, debs[0]), unpacked],
                          capture_output=True, text=True)
    if proc.returncode:
        raise FashionMNISTError(f'`dpkg-deb -x {debs[0]}` failed: {proc.stderr.strip()}')
    return osp.join(unpacked, DEBIAN_DIR.lstrip('/'))


def download_with_mmpretrain(root):
    """mmpretrain's own download of the gzip'd files (md5-checked), then decompression."""
    from mmpretrain.datasets.utils import download_and_extract_archive
    for filename, md5 in FashionMNIST.train_list + FashionMNIST.test_list:
        download_and_extract_archive(urljoin(FashionMNIST.url_prefix, filename),
                                     download_root=root, filename=filename, md5=md5)


def prepare_fashion_mnist(root=None, source=None, debian_dir=DEBIAN_DIR, use_apt=True,
                          allow_download=True):
    """Make ``root`` hold Fashion-MNIST's four uncompressed idx files, from the first source
    that has them (see the module docstring). Idempotent and fast once prepared.

    Args:
        root (str, optional): target folder; :func:`default_root` if None.
        source (str, optional): a folder with the idx files (``.gz`` or not) to use first.
        debian_dir (str): where the installed Debian package keeps them.
        use_apt (bool): fetch the Debian package with ``apt-get download`` if not installed.
        allow_download (bool): fall back to mmpretrain's download.

    Returns:
        str: ``root``, expanded.
    """
    root = osp.abspath(osp.expanduser(root or default_root()))
    if is_prepared(root):
        check_prepared(root)
        return root
    _say(f'preparing Fashion-MNIST (70,000 28x28 images, 10 classes, MIT licence) in {root}')
    if source is not None:
        if not install_from_folder(source, root):
            raise FashionMNISTError(f'{source} does not hold the Fashion-MNIST idx files '
                                    f'({", ".join(FILES)}, gzip\'d or not).')
    elif osp.isdir(debian_dir) and install_from_folder(debian_dir, root):
        _say(f'  from the installed Debian package ({debian_dir})')
    else:
        reason = None
        if use_apt:
            with tempfile.TemporaryDirectory(prefix='mmtlalign-fmnist-') as tmp:
                try:
                    folder = fetch_debian_package(tmp)
                    if not install_from_folder(folder, root):
                        reason = f'the package has no idx files under {DEBIAN_DIR}'
                except FashionMNISTError as e:
                    reason = str(e)
        else:
            reason = 'fetching the Debian package was turned off'
        if reason is not None:
            if not allow_download:
                raise FashionMNISTError(f'cannot prepare Fashion-MNIST in {root}: Debian package '
                                        f'{DEBIAN_PACKAGE} unavailable ({reason}).')
            _say(f'Debian package {DEBIAN_PACKAGE} unavailable ({reason}); falling back to '
                 f"mmpretrain's own download from {FashionMNIST.url_prefix}")
            try:
                download_with_mmpretrain(root)
            except Exception as e:  # noqa: BLE001  (network errors come in many types)
                raise FashionMNISTError(
                    f"mmpretrain's download of Fashion-MNIST failed too ({type(e).__name__}: "
                    f'{e}). Put the four idx files ({", ".join(FILES)}, .gz or not) in a folder '
                    'and pass it as the source (tools/demo.py --fmnist-source DIR).') from e
    counts = check_prepared(root)
    _say(f'ready: {counts["train"]} training and {counts["test"]} test images in {root}')
    return root


@DATASETS.register_module()
class PreparedFashionMNIST(FashionMNIST):
    """mmpretrain's :class:`FashionMNIST`, prepared on first use by :func:`prepare_fashion_mnist`
    (Debian package, else mmpretrain's download).

    Differences from the parent: ``data_root`` defaults to :func:`default_root` and ``~`` is
    expanded; ``split='test'`` selects the test files (the parent picks the files by
    ``test_mode`` only, so ``split='test'`` alone would silently give the training set).

    Args:
        data_root (str, optional): folder of the uncompressed idx files.
        split (str): 'train' (60,000 images) or 'test' (10,000).
        download (bool): prepare the files when missing; False raises instead.
        **kwargs: those of :class:`FashionMNIST` / ``BaseDataset`` (``indices=N`` takes the
            first N images: the Fashion-MNIST files are in shuffled order, so that is a fair
            subset).
    """

    def __init__(self, data_root=None, split='train', download=True, test_mode=False, **kwargs):
        data_root = osp.expanduser(data_root or default_root())
        super().__init__(data_root=data_root, split=split, download=download,
                         test_mode=test_mode or split == 'test', **kwargs)

    def _download(self):
        prepare_fashion_mnist(self.data_prefix['root'])
