# MixPro's released DeiT-S recipe (fistyee/MixPro, configs/deit/deit_small_patch14_mask56_224_
# alpha1.yaml; ../../../shared/PEERS.md section 1.1), for reproduction beside the same-recipe arms
# (configs/tlalign/deit-s_8xb128_{maskmix,mixpro}.py). As released: PAL off (area labels; the
# paper's PAL: mixpro_deit-s-p14_8xb128_in1k_pal.py).
#
# - a ViT-S with **patch 14** (16 x 16 = 256 tokens, ~1.33x DeiT-S/16's FLOPs), drop path 0.1;
# - per batch: MaskMix (4 x 4 cells of 56 px = 4 x 4 tokens each, random partner) with p 0.5,
#   else timm's Mixup 0.8 / CutMix 1.0 (switch 0.5, pixel boxes, partner B-1-i);
# - AdamW wd 0.05, lr 1e-3 **not scaled** with the batch, 20 warm-up epochs from 1e-6, cosine
#   to 1e-5 per step, 300 epochs, 8 x 128 images; label smoothing 0.1; RandAugment m9, random
#   erasing 0.25 (the DeiT pipeline); no repeated augmentation, no EMA.
# - not reproduced: the release clips gradients at 5.0 after the AMP step (so never; here none),
#   its NameError at the first epoch (math not imported) and the unused head1 / mask_token.
_base_ = '../tlalign/deit-s_8xb128_cutmix.py'

model = dict(
    align=False,
    backbone=dict(patch_size=14, drop_path_rate=0.1),
    mix=dict(
        _delete_=True,
        type='RandomChoiceMix',
        mixers=[
            dict(type='MaskMix', alpha=1.0, cell_size=56),
            dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.8, switch_prob=0.5,
                 prob=1.0, mode='batch', box_grid=1, pairing='flip'),
        ],
        probs=[0.5, 0.5]))

train_dataloader = dict(sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))

optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=None)
auto_scale_lr = dict(enable=False)  # main.py:467-469: lr ignores the batch size
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20,
         convert_to_iter_based=True),
]
