# Same-recipe plain-CutMix baseline for TL-Align DeiT-T.
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(backbone=dict(arch='deit-tiny'), head=dict(in_channels=192))
