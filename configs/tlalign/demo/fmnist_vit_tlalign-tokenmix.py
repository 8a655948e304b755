# Demo, TL-Align on TokenMix's block masks (a new arm): fmnist_vit_tokenmix.py with traced labels.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_tlalign-tokenmix.py
_base_ = './fmnist_vit_tokenmix.py'

model = dict(align=True)
