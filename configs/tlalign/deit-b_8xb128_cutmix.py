# Same-recipe plain-CutMix baseline for TL-Align DeiT-B (drop path 0.1 as in mmpretrain's DeiT-B).
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(
    backbone=dict(arch='deit-base', drop_path_rate=0.1), head=dict(in_channels=768))
