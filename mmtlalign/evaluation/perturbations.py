"""Computed perturbations of a validation set, applied on the fly to the raw (uint8) images of a
batch, before the model's data preprocessor — deterministically: every image draws its own
random numbers from ``(seed, sample index, setting)``, so the result does not depend on the
batch size, the order of the batches or the process that evaluates it.

- :func:`occlude`: a fraction of the patch tokens has all its pixels set to the
  preprocessor's mean (0 after normalisation: the token carries no signal);
- :func:`patch_shuffle`: the image cut into ``g x g`` blocks, the blocks permuted;
- :func:`corrupt`: the 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at
  severities 1-5 from ``imagecorruptions`` (the maintained fork ``imagecorruptions-imaug``;
  the 2020 original calls scikit-image's removed ``multichannel=`` argument and fails with
  current scikit-image).

Images are ``(B, C, H, W)`` uint8 tensors, C = 1 (grey) or 3 (BGR, as mmcv loads them).
"""
import hashlib
import inspect
import io
import os.path as osp
import zlib
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from .. import workdir
from ..errors import UserInputError

#: the 15 corruptions of ImageNet-C in the benchmark's order (noise, blur, weather, digital)
CORRUPTIONS = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
               'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
               'elastic_transform', 'pixelate', 'jpeg_compression')
SEVERITIES = (1, 2, 3, 4, 5)
#: the library's smallest image side; smaller images (Fashion-MNIST's 28 px) are upsampled
#: (bilinear) for the corruption and brought back (area averaging)
MIN_SIDE = 32


def image_rng(seed, sample_idx, *setting):
    """A generator for one image and one setting: ``(seed, sample index, setting...)``."""
    key = [int(seed), int(sample_idx)] + [zlib.crc32(str(s).encode()) for s in setting]
    return np.random.default_rng(key)


def image_seed(seed, sample_idx, *setting):
    """A 32-bit seed for one image and one setting (for libraries with a global generator)."""
    return int(image_rng(seed, sample_idx, *setting).integers(2 ** 31 - 1))


def occlude(images, fraction, patch_size, sample_idx, fill, seed=0):
    """Blank ``round(fraction * tokens)`` random patch tokens of every image.

    Args:
        images (Tensor): ``(B, C, H, W)`` uint8.
        fraction (float): share of the patch tokens blanked, in [0, 1].
        patch_size (int): token side in pixels (the model's patch size); H and W are cut into
            ``ceil(H / p) x ceil(W / p)`` tokens.
        sample_idx (list[int]): dataset index of every image (its random draw).
        fill (Tensor): ``(C,)`` uint8 value of a blanked pixel.

    Returns:
        Tensor: ``(B, C, H, W)`` uint8, the images with the tokens blanked.
    """
    b, c, h, w = images.shape
    gh, gw = -(-h // patch_size), -(-w // patch_size)
    n = gh * gw
    k = int(round(fraction * n))
    out = images.clone()
    for i in range(b):
        tokens = image_rng(seed, sample_idx[i], 'occlusion', fraction).permutation(n)[:k]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(tokens, dtype=torch.long)] = True
        pixels = mask.view(gh, gw).repeat_interleave(patch_size, 0).repeat_interleave(
            patch_size, 1)[:h, :w]
        out[i][:, pixels] = fill.view(c, 1).to(out.dtype)
    return out


def patch_shuffle(images, grid, sample_idx, seed=0):
    """Cut every image into ``grid x grid`` blocks and permute them at random.

    H and W must be divisible by ``grid`` (the last rows/columns beyond it stay in place
    otherwise). Returns ``(B, C, H, W)`` uint8.
    """
    b, c, h, w = images.shape
    bh, bw = h // grid, w // grid
    out = images.clone()
    for i in range(b):
        perm = image_rng(seed, sample_idx[i], 'shuffle', grid).permutation(grid * grid)
        blocks = [images[i, :, r * bh:(r + 1) * bh, q * bw:(q + 1) * bw]
                  for r in range(grid) for q in range(grid)]
        for j, src in enumerate(perm):
            r, q = divmod(j, grid)
            out[i, :, r * bh:(r + 1) * bh, q * bw:(q + 1) * bw] = blocks[src]
    return out


def _library():
    """The ``imagecorruptions`` module, or a one-line error naming the package to install."""
    try:  # an optional package, imported by the corruption stages alone
        import imagecorruptions
    except ImportError as e:
        raise UserInputError(
            'the corruption stage needs the imagecorruptions package: pip install '
            'imagecorruptions-imaug==1.1.5 (the maintained fork; see requirements/pins.txt).'
        ) from e
    return imagecorruptions


def _seed_kw(name):
    """Whether the library's corruption ``name`` takes its own ``seed`` (the fork's
    impulse_noise and glass_blur draw from their own generators, not numpy's global one)."""
    return 'seed' in inspect.signature(getattr(_library().corruptions, name)).parameters


def _resize(image, size, area=False):
    """``image`` (H, W, 3) resized to ``size`` = (width, height) with OpenCV."""
    import cv2  # here, not at the top: only the corruption stages resize with OpenCV
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def corrupt(images, name, severity, sample_idx, seed=0):
    """One ImageNet-C corruption at one severity, image by image.

    Grey images are corrupted as three equal channels and turned back to grey (ITU-R 601
    luma); colour images go to the library in RGB and come back in BGR. Images under 32 px a
    side are corrupted at 32 px and resized back (see :data:`MIN_SIDE`).

    Args:
        images (Tensor): ``(B, C, H, W)`` uint8, C = 1 or 3 (BGR).
        name (str): one of :data:`CORRUPTIONS` (or the library's extra ones).
        severity (int): 1-5.

    Returns:
        Tensor: ``(B, C, H, W)`` uint8.
    """
    lib = _library()
    if name not in lib.get_corruption_names('all'):
        raise UserInputError(f'unknown corruption {name!r}; use one of '
                             f'{", ".join(lib.get_corruption_names("all"))}.')
    if severity not in SEVERITIES:
        raise UserInputError(f'corruption severity must be 1-5, got {severity}.')
    own_seed = _seed_kw(name)
    b, c, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(b):
        x = images[i].permute(1, 2, 0).numpy()
        x = np.repeat(x, 3, axis=2) if c == 1 else np.ascontiguousarray(x[..., ::-1])
        s = image_seed(seed, sample_idx[i], name, severity)
        np.random.seed(s)  # most corruptions draw from numpy's global generator
        kwargs = dict(seed=s) if own_seed else {}
        small = min(h, w) < MIN_SIDE
        if small:  # the library refuses images under 32 px: corrupt an upsampled copy
            x = _resize(x, (round(w * MIN_SIDE / min(h, w)), round(h * MIN_SIDE / min(h, w))))
        y = np.asarray(lib.corrupt(x, severity=severity, corruption_name=name, **kwargs),
                       dtype=np.float32)
        if y.ndim == 2:
            y = y[..., None].repeat(3, axis=2)
        y = _resize(y, (w, h), area=True) if small else y[:h, :w]
        if c == 1:
            y = (y[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        else:
            y = y[..., 2::-1]
        out[i] = torch.from_numpy(np.clip(np.rint(y), 0, 255).astype(np.uint8)).permute(2, 0, 1)
    return out


def corrupt_cached(images, name, severity, sample_idx, seed=0, cache_dir=None):
    """:func:`corrupt`, with the result kept in ``cache_dir`` (keyed by the images' bytes,
    their indices, the corruption, severity, seed and library version): every arm and seed of
    a suite sees the same corrupted images, so they are computed once. Without ``cache_dir``
    it is :func:`corrupt`."""
    if not cache_dir:
        return corrupt(images, name, severity, sample_idx, seed)
    try:
        lib_version = version('imagecorruptions-imaug')
    except PackageNotFoundError:
        lib_version = getattr(_library(), '__version__', '?')
    h = hashlib.sha1(images.contiguous().numpy().tobytes())
    h.update(repr((list(map(int, sample_idx)), name, int(severity), int(seed), MIN_SIDE,
                   lib_version, tuple(images.shape))).encode())
    path = osp.join(cache_dir, f'{name}-{int(severity)}-{h.hexdigest()}.npy')
    cached = read_cached(path, tuple(images.shape))
    if cached is not None:
        return cached
    out = corrupt(images, name, severity, sample_idx, seed)
    buf = io.BytesIO()
    np.save(buf, out.numpy())
    workdir.write_bytes(path, buf.getvalue())  # whole, never through a planted link
    return out


def read_cached(path, shape):
    """The cached corrupted images at ``path`` (None when missing): a regular ``.npy`` file of
    this user (read without following a link), ``uint8`` of ``shape``; anything else is a
    one-line :class:`~mmtlalign.workdir.WorkDirError` (the key of a cache file can be computed
    by anyone who sees the images, so a planted file must not pass for a result)."""
    limit = int(np.prod(shape)) + 4096  # the array and the .npy header
    data = workdir.read_bytes(path, limit=limit)
    if data is None:
        return None
    fix = 'delete it (it is computed again)'
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise workdir.WorkDirError(f'{workdir.shown(path)} is not a cached array of these tools; '
                                   f'{fix}.') from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.shape != shape:
        raise workdir.WorkDirError(
            f'{workdir.shown(path)} holds a {getattr(arr, "dtype", "?")} array of shape '
            f'{getattr(arr, "shape", "?")}, not the uint8 {shape} of the images it caches; '
            f'{fix}.')
    return torch.from_numpy(arr)
