# Same-recipe plain-CutMix baseline for TL-Align Swin-B (drop path 0.5 as in mmpretrain's Swin-B).
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
