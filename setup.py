"""mmtlalign: TL-Align for OpenMMLab.

``install_requires`` holds the version *ranges* the code works with, so that ``pip install -e .``
into an existing OpenMMLab environment keeps its torch and mmcv; the exact, tested versions are in
``requirements/pins.txt`` (what ``tools/setup_env.sh`` builds). Why each bound:

* ``torch>=2.6``: checkpoints load with ``weights_only=True`` through
  ``torch.serialization.safe_globals`` with ``(stand-in, 'module.name')`` pairs
  (mmtlalign/checkpoint/loader.py), which torch 2.6 introduced; ``nn.Module.compile`` and the
  ``scale=`` argument of ``scaled_dot_product_attention`` are older. No upper bound: mmcv is
  compiled against the installed torch, whichever it is.
* ``torchvision>=0.21``: the release paired with torch 2.6 (mmpretrain imports it).
* ``mmcv>=2.0.0,<2.2.0``: mmdet 3.3 and mmsegmentation 1.2.2 assert ``mmcv<2.2.0`` at import;
  mmpretrain 1.2 asserts ``mmcv>=2.0.0``. Needs its compiled ops (see README "Installation").
* ``mmengine>=0.10.0,<1.0.0``: the Runner hooks, checkpoint file backend and ``compile`` step we
  build on are mmengine 0.10's; OpenMMLab 2.x packages all assert ``mmengine<1.0.0``.
* ``mmpretrain>=1.2.0,<2``: the backbones we subclass (``MultiheadAttention`` calling
  ``scaled_dot_product_attention``, Swin's ``pad_small_map``) and the ``mmpretrain::`` recipes
  our configs inherit, as in 1.2.0 (the last release).
* ``mmdet>=3.3.0,<4`` and ``mmsegmentation>=1.2.2,<2``: the downstream configs inherit their
  3.3 / 1.2.2 recipes; the next majors change the registries and config layout.
* ``numpy<2``: OpenMMLab 2.x releases (and mmcv 2.1 built against numpy 1) predate numpy 2.
* ``ftfy``, ``regex``: mmsegmentation 1.2.2 imports them without declaring them.
* ``matplotlib>=3.5``: plots of the demo and analysis tools.

mim: configs and tools are packaged under ``mmtlalign/.mim`` (symlinks for an editable install,
copies in a wheel or sdist), as mmpretrain/mmdet do, so ``mim train mmtlalign CONFIG`` and
``mim test mmtlalign CONFIG --checkpoint CKPT`` run our ``tools/train.py`` / ``tools/test.py``.
"""
import os
import os.path as osp
import platform
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))

INSTALL_REQUIRES = [
    'torch>=2.6',
    'torchvision>=0.21',
    'mmcv>=2.0.0,<2.2.0',
    'mmengine>=0.10.0,<1.0.0',
    'mmpretrain>=1.2.0,<2.0.0',
    'mmdet>=3.3.0,<4.0.0',
    'mmsegmentation>=1.2.2,<2.0.0',
    'numpy>=1.23,<2',
    'ftfy>=6',
    'regex',
    'matplotlib>=3.5',
]
EXTRAS_REQUIRE = {
    # mmengine's TensorboardVisBackend imports torch.utils.tensorboard, which needs it
    'tensorboard': ['tensorboard>=2.10'],
    # pytest; timm checks the timm -> mmpretrain converter; openmim drives `mim train/test`
    'tests': ['pytest>=7', 'timm>=0.9', 'openmim>=0.3.9', 'tensorboard>=2.10'],
    # evaluation stages (mmtlalign/evaluation): ImageNet-C corruptions (the maintained fork of
    # imagecorruptions), calibration error, and timm's ImageNet class lists for A/R/Sketch/C
    'evaluation': ['imagecorruptions-imaug>=1.1.5', 'torchmetrics>=1.0', 'timm>=0.9'],
}

#: what `mim` looks for in <package>/.mim (model-index.yml: `mim search`, the metafile lookup)
MIM_FILES = ['configs', 'tools', 'model-index.yml']


def read_version():
    scope = {}
    with open(osp.join(ROOT, 'mmtlalign', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def add_mim_extension():
    """Put configs and tools under mmtlalign/.mim, the way OpenMMLab packages do.

    Editable installs (``pip install -e .``, ``setup.py develop``) get relative symlinks, so
    the repo's files are used as they change; wheels and sdists get copies.
    """
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'copy' if platform.system() == 'Windows' else 'symlink'
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mmtlalign', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim_path, name)
        if not osp.exists(src):  # building from an sdist: its .mim copy is already there
            if not osp.exists(dst):
                warnings.warn(f'{src} does not exist; mim will not find {name}.')
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isfile(src):
            shutil.copyfile(src, dst)
        else:
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmtlalign',
        version=read_version(),
        description='TL-Align (Token-Label Alignment for Vision Transformers) for OpenMMLab',
        packages=find_packages(include=['mmtlalign', 'mmtlalign.*']),
        include_package_data=True,  # mmtlalign/.mim (MANIFEST.in)
        python_requires='>=3.9',
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        license='Apache-2.0',
        zip_safe=False,
    )
