# TL-Align Swin-S (paper: 83.0 -> 83.4 top-1 on ImageNet-1k).
_base_ = './swin-s_16xb64_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedSwinTransformer', residual_weight=0.5))
