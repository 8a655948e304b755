# DeiT-B with DeiT's own recipe: the paper's baseline row (81.8, the DeiT paper's number).
# deit-s_8xb128_deit.py (Mixup 0.8 + CutMix 1.0, EMA) at DeiT-B size, as deit-b_8xb128_cutmix.py
# is deit-s_8xb128_cutmix.py at DeiT-B size.
_base_ = './deit-s_8xb128_deit.py'

model = dict(backbone=dict(arch='deit-base'), head=dict(in_channels=768))
