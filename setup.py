from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('mmtlalign/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_pins(names):
    pins = {}
    with open('requirements/pins.txt') as f:
        for line in f:
            line = line.split('#')[0].strip()
            if '==' in line:
                pins[line.split('==')[0]] = line
    return [pins[n] for n in names]


setup(
    name='mmtlalign',
    version=read_version(),
    description='TL-Align (Token-Label Alignment for Vision Transformers) for OpenMMLab',
    packages=find_packages(include=['mmtlalign', 'mmtlalign.*']),
    python_requires='>=3.9',
    # mmcv 2.1.0 has no binary wheel in the registry: tools/setup_env.sh builds it with ops.
    install_requires=read_pins([
        'torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain', 'mmdet',
        'mmsegmentation', 'numpy', 'ftfy', 'regex', 'matplotlib'
    ]),
    license='Apache-2.0',
)
