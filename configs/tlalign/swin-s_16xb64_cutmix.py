# Same-recipe plain-CutMix baseline for TL-Align Swin-S (drop path 0.3 as in mmpretrain's Swin-S).
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
