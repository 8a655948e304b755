# TL-Align Swin-B (paper: 83.5 -> 83.7 top-1 on ImageNet-1k). Differs from its same-recipe
# baseline swin-b_16xb64_cutmix.py only in the labels (model.align).
_base_ = './swin-b_16xb64_cutmix.py'

model = dict(align=True)
