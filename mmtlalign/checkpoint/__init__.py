"""Reading, checking and converting checkpoints: the one place that reads a file a user may
have downloaded.

* :mod:`.loader`: weights-only loading with mmtlalign's own allow-list, after checking the
  zip records, and the checks of what it built;
* :mod:`.remote`: every scheme of mmengine's ``CheckpointLoader`` (local paths, ``http(s)://``
  through torch.hub's cache with the file name's hash prefix checked, ``open-mmlab://``, ...)
  routed through :mod:`.loader`;
* :mod:`.inert`: the config text and paths mmengine would act on, made plain data;
* :mod:`.fit`: does a checkpoint fit a model or a backbone? One-line refusals;
* :mod:`.convert`: classifier -> backbone, timm -> mmpretrain;
* :mod:`.state_dict`: where the weights sit in a file.
"""
from .convert import classifier_to_backbone, timm_to_mmpretrain
from .fit import (
                  CheckpointFitError,
                  LoadReport,
                  backbone_load_report,
                  check_checkpoint_fits,
                  check_pretrained_backbone,
)
from .loader import CheckpointLoadError, load_checkpoint_bytes, load_checkpoint_file
from .state_dict import ConversionError, unwrap_state_dict

__all__ = [
    'CheckpointFitError', 'CheckpointLoadError', 'ConversionError', 'LoadReport',
    'backbone_load_report', 'check_checkpoint_fits', 'check_pretrained_backbone',
    'classifier_to_backbone', 'load_checkpoint_bytes', 'load_checkpoint_file',
    'timm_to_mmpretrain', 'unwrap_state_dict'
]
