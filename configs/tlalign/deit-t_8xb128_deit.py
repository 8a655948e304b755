# DeiT-T with DeiT's own recipe: the paper's baseline row (72.2, the DeiT paper's number).
# deit-s_8xb128_deit.py (Mixup 0.8 + CutMix 1.0, EMA) at DeiT-T size, as deit-t_8xb128_cutmix.py
# is deit-s_8xb128_cutmix.py at DeiT-T size.
_base_ = './deit-s_8xb128_deit.py'

model = dict(backbone=dict(arch='deit-tiny'), head=dict(in_channels=192))
