"""What every checkpoint reader shares: where the weights sit in a file, and the converters'
names (for messages)."""
from collections import OrderedDict

import torch

from ..errors import UserInputError

CONVERTER_CLS = 'tools/model_converters/cls_to_backbone.py'
CONVERTER_TIMM = 'tools/model_converters/timm_to_mmpretrain.py'


class ConversionError(UserInputError):
    """The checkpoint cannot be converted; the message says why and what to do."""


def strip_module_prefix(sd):
    """``sd`` without a DataParallel ``module.`` prefix (only when every key has it)."""
    if sd and all(k.startswith('module.') for k in sd):
        return OrderedDict((k[len('module.'):], v) for k, v in sd.items())
    return sd


def unwrap_state_dict(checkpoint):
    """The tensor dict inside a checkpoint (``state_dict`` / ``model`` / ``module`` / raw),
    with a DataParallel ``module.`` prefix removed."""
    sd = checkpoint
    if isinstance(checkpoint, dict):
        for key in ('state_dict', 'model', 'module'):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                sd = checkpoint[key]
                break
    if not isinstance(sd, dict) or not sd:
        raise ConversionError('no state dict found in the checkpoint (looked for the keys '
                              "'state_dict', 'model', 'module' and for a flat tensor dict).")
    tensors = OrderedDict((k, v) for k, v in sd.items() if torch.is_tensor(v))
    if not tensors:
        raise ConversionError('the checkpoint\'s state dict holds no tensors.')
    tensors = strip_module_prefix(tensors)
    metadata = getattr(sd, '_metadata', None)
    if metadata is not None:
        tensors._metadata = metadata
    return tensors
