"""A simple feature pyramid for plain (single-scale) ViT backbones in mmdet.

The idea of ViTDet (Li et al., "Exploring Plain Vision Transformer Backbones for Object
Detection", 2022): build the pyramid from the last stride-16 feature map alone, with
deconvolutions for the finer levels and pooling for the coarser ones. The pip-installed mmdet
does not ship its ``projects/ViTDet``, so mmtlalign registers this one in mmdet's ``MODELS``.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


def _norm(norm_cfg, channels):
    if norm_cfg is None:
        return nn.Identity()
    cfg = dict(norm_cfg)
    if cfg.pop('type') == 'LN2d':
        return LayerNorm2d(channels, **cfg)
    return build_norm_layer(norm_cfg, channels)[1]


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Multi-scale features from one ViT feature map, for FPN-style detectors.

    For each scale factor: 4 -> two stride-2 deconvolutions (norm and GELU between), 2 -> one
    deconvolution, 1 -> identity, 0.5 -> 2x2 max pooling. Every level then gets a 1x1 and a 3x3
    convolution (with norm) to ``out_channels``. Extra levels beyond the scale factors (e.g. P6
    for the RPN) are stride-2 subsamplings of the last one, as mmdet's ``FPN`` does.

    Args:
        in_channels (int): channels of the backbone's feature map (384 for DeiT-S).
        out_channels (int): channels of every output level (256 for mmdet's heads).
        scale_factors (Sequence[float]): from {4, 2, 1, 0.5}; with a stride-16 input the
            default gives strides 4, 8, 16, 32.
        num_outs (int): number of outputs (>= len(scale_factors)).
        in_index (int): which backbone output to use. Defaults to the last.
        norm_cfg (dict): norm after each convolution; ``dict(type='LN2d')`` (channel
            LayerNorm, the ViTDet choice) or any mmcv norm (e.g. ``dict(type='GN',
            num_groups=32)``).
    """

    def __init__(self,
                 in_channels,
                 out_channels=256,
                 scale_factors=(4.0, 2.0, 1.0, 0.5),
                 num_outs=5,
                 in_index=-1,
                 norm_cfg=dict(type='LN2d', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is smaller than the number of scale factors '
                             f'{len(scale_factors)}.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(scale_factors)
        self.num_outs = num_outs
        self.in_index = in_index
        conv_norm = None if norm_cfg is None else dict(norm_cfg)

        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            dim = in_channels
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                    _norm(conv_norm, dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
                ]
                dim = dim // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim = dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise ValueError(f'scale factor {scale} is not supported (use 4, 2, 1, 0.5).')
            layers += [
                self._conv(dim, out_channels, 1, conv_norm),
                self._conv(out_channels, out_channels, 3, conv_norm),
            ]
            self.stages.append(nn.Sequential(*layers))

    @staticmethod
    def _conv(in_ch, out_ch, kernel_size, norm_cfg):
        conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2,
                         bias=norm_cfg is None)
        if norm_cfg is None:
            return conv
        return nn.Sequential(conv, _norm(norm_cfg, out_ch))

    def forward(self, inputs):
        x = inputs[self.in_index] if isinstance(inputs, (list, tuple)) else inputs
        if x.dim() != 4:
            raise ValueError(f'SimpleFeaturePyramid needs an (N, C, H, W) feature map, got shape '
                             f"{tuple(x.shape)}; build the ViT backbone with out_type='featmap'.")
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
