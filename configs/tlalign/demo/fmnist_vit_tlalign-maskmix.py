# Demo, TL-Align on MaskMix masks (a new arm): fmnist_vit_maskmix.py with traced labels.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_tlalign-maskmix.py
_base_ = './fmnist_vit_maskmix.py'

model = dict(align=True)
