# TL-Align DeiT-S (paper: 79.8 -> 80.6 top-1 on ImageNet-1k), the released training. Differs from
# its same-recipe baseline deit-s_8xb128_cutmix.py only in the labels (model.align); the
# recipe and what remains different from the released code: configs/tlalign/README.md.
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(align=True)
