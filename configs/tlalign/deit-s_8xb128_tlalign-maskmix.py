# DeiT-S, TL-Align on MaskMix masks (a new arm): deit-s_8xb128_maskmix.py with traced labels.
_base_ = './deit-s_8xb128_maskmix.py'

model = dict(align=True)
