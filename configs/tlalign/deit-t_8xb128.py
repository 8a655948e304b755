# TL-Align DeiT-T (paper: 72.2 -> 73.2 top-1 on ImageNet-1k), the released training. Differs from
# its same-recipe baseline deit-t_8xb128_cutmix.py only in the labels (model.align); the
# recipe and what remains different from the released code: configs/tlalign/README.md.
_base_ = './deit-t_8xb128_cutmix.py'

model = dict(align=True)
