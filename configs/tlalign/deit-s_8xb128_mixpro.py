# DeiT-S, MixPro arm (the paper's method: MaskMix + Progressive Attention Labeling) on the recipe
# of deit-s_8xb128_cutmix.py; deit-s_8xb128_maskmix.py with the PAL label rule.
_base_ = './deit-s_8xb128_maskmix.py'

model = dict(align='PALLabel')
