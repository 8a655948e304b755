# TL-Align Swin-T (paper: 81.2 -> 81.4 top-1 on ImageNet-1k).
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(align=True, backbone=dict(type='AlignedSwinTransformer', residual_weight=0.5))
