# TL-Align Swin-T (paper: 81.2 -> 81.4 top-1 on ImageNet-1k). Differs from its same-recipe
# baseline swin-t_16xb64_cutmix.py only in the labels (model.align).
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(align=True)
