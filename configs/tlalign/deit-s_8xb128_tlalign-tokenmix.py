# DeiT-S, TL-Align on TokenMix's block masks (a new arm): deit-s_8xb128_tokenmix.py with traced
# labels.
_base_ = './deit-s_8xb128_tokenmix.py'

model = dict(align=True)
