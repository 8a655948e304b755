# DeiT-T, the released TL-Align training with plain CutMix (area-ratio) labels: the same-recipe
# baseline of deit-t_8xb128.py (which differs only in model.align). The recipe is
# deit-s_8xb128_cutmix.py's (the released one is the same for the three sizes).
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(backbone=dict(arch='deit-tiny'), head=dict(in_channels=192))
