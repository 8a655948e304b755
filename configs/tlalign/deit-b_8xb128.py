# TL-Align DeiT-B (paper: 81.8 -> 82.3 top-1 on ImageNet-1k).
_base_ = './deit-b_8xb128_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedVisionTransformer', residual_weight=0.5))
