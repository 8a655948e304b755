"""TensorFloat-32 for float32 matmuls and convolutions on Ampere and newer GPUs.

PyTorch leaves TF32 off for matmuls (cuBLAS) by default, so an A100/H100 runs the float32
parts of a model (all of it without ``--amp``; the float32 islands with it) at full-fp32 speed,
several times slower than TF32. TF32 keeps float32's range with a 10-bit mantissa, the
precision that mixed-precision training already accepts, so mmtlalign turns it on by default,
as timm and most training codebases do. A top-level config key turns it off::

    tf32 = False   # in the config, or --cfg-options tf32=False

``tools/train.py`` and ``tools/test.py`` call :func:`configure_tf32` right after loading the
config, in every process.
"""
import torch
from mmengine.logging import print_log

from ..errors import UserInputError

#: the first compute capability with TF32 tensor cores (Ampere, sm_80)
TF32_MIN_CAPABILITY = (8, 0)


def tf32_supported():
    """True when every visible GPU has TF32 tensor cores (compute capability >= 8.0)."""
    if not torch.cuda.is_available():
        return False
    return all(torch.cuda.get_device_capability(i) >= TF32_MIN_CAPABILITY
               for i in range(torch.cuda.device_count()))


def configure_tf32(cfg):
    """Turn TF32 on (config ``tf32``, default True) or off for cuBLAS matmuls and cuDNN
    convolutions.

    On GPUs older than Ampere, and without a GPU, TF32 does not exist and nothing is changed.
    Uses torch's ``allow_tf32`` flags (not the newer ``fp32_precision`` ones): torch refuses
    to read the old flags once the new ones were set, and other code still reads them.

    Args:
        cfg (mmengine.Config | dict): the loaded config.

    Returns:
        bool | None: whether TF32 is now on; None when the machine has no TF32 (nothing set).
    """
    wanted = cfg.get('tf32', True)
    if not isinstance(wanted, bool):
        raise UserInputError(f'config key tf32 must be True or False, got {wanted!r}; e.g. '
                             '--cfg-options tf32=False to keep full float32 matmuls.')
    if not tf32_supported():
        return None
    torch.backends.cuda.matmul.allow_tf32 = wanted
    torch.backends.cudnn.allow_tf32 = wanted
    print_log(f'TF32 matmuls and convolutions {"on" if wanted else "off"} (config key tf32).',
              logger='current')
    return wanted
