# DeiT-T with DeiT's own recipe: the paper's baseline row (72.2, the DeiT paper's number).
# The released TL-Align training (deit-t_8xb128_cutmix.py) with DeiT's defaults where they
# differ: Mixup 0.8 + CutMix 1.0 and EMA. Everything else as there.
_base_ = './deit-t_8xb128_cutmix.py'

model = dict(
    align=False,
    # timm's Mixup as DeiT calls it: per batch, Mixup (alpha 0.8) or CutMix (alpha 1.0) with
    # probability 0.5 each; pixel-accurate CutMix box drawn as timm's rand_bbox, lambda
    # corrected to the box; image i mixed with image B-1-i (timm's x.flip(0))
    mix=dict(
        type='TLAlignMix',
        cutmix_alpha=1.0,
        mixup_alpha=0.8,
        switch_prob=0.5,
        prob=1.0,
        mode='batch',
        box_grid=1,
        pairing='flip'))

# DeiT's model EMA, decay 0.99996 after every step (mmengine's momentum = 1 - decay). Unlike
# DeiT's main.py, mmengine validates and saves the EMA weights (see README.md).
custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook', on_error='raise'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
