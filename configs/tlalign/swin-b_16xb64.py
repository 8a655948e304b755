# TL-Align Swin-B (paper: 83.5 -> 83.7 top-1 on ImageNet-1k).
_base_ = './swin-b_16xb64_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedSwinTransformer', residual_weight=0.5))
