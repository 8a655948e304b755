# TL-Align DeiT-T (paper: 72.2 -> 73.2 top-1 on ImageNet-1k).
_base_ = './deit-t_8xb128_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedVisionTransformer', residual_weight=0.5))
