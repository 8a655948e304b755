# Swin-T, TL-Align on TokenMix's block masks (a new arm): swin-t_16xb64_tokenmix.py with traced
# labels.
_base_ = './swin-t_16xb64_tokenmix.py'

model = dict(align=True)
