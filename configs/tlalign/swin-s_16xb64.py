# TL-Align Swin-S (paper: 83.0 -> 83.4 top-1 on ImageNet-1k). Differs from its same-recipe
# baseline swin-s_16xb64_cutmix.py only in the labels (model.align).
_base_ = './swin-s_16xb64_cutmix.py'

model = dict(align=True)
