# TL-Align DeiT-S (paper: 79.8 -> 80.6 top-1 on ImageNet-1k).
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedVisionTransformer', residual_weight=0.5))
