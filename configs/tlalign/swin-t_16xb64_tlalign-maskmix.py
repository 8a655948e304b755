# Swin-T, TL-Align on MaskMix masks (a new arm): swin-t_16xb64_maskmix.py with traced labels.
_base_ = './swin-t_16xb64_maskmix.py'

model = dict(align=True)
