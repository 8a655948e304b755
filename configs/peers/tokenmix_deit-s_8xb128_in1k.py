# TokenMix's released DeiT-S recipe without its teacher (Sense-X/TokenMix exp/deit_small/run.sh,
# main.py defaults; ../../../shared/PEERS.md section 3.1), for reproduction beside the same-recipe
# arm (configs/tlalign/deit-s_8xb128_tokenmix.py).
#
# - DeiT-S/16, drop path 0.1; 8 x 128 = 1024 images per step, lr 1e-3, AdamW wd 0.05, 5 warm-up
#   epochs, cosine, **310** epochs (300 + 10 cooldown epochs at the minimum lr);
# - per batch: TokenMix's block mask (112 of 196 tokens, one mask per batch, partner B-1-i) with
#   p 0.5, else Mixup 0.8;
# - label smoothing 0.1, random erasing 0.25, EMA 0.99996 (the release reports max(raw, EMA)).
# - not reproduced: the teacher label maps (NFNet-F6 via TokenLabeling, offline files): without
#   them the label is the area share of the placed tokens (mmtlalign's soft cross-entropy with
#   label smoothing, not the release's BCE; the two targets differ by eps (lambda - 1/2)
#   (e_a - e_b), about 0.007); and the TokenLabeling data pipeline order.
_base_ = '../tlalign/deit-s_8xb128_cutmix.py'

model = dict(
    align=False,
    mix=dict(
        _delete_=True,
        type='RandomChoiceMix',
        mixers=[
            dict(type='BlockMaskMix', mask_ratio=0.5, min_tokens=14, cell_size=16),
            dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8, pairing='flip'),
        ],
        probs=[0.5, 0.5]))

train_dataloader = dict(sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    # cosine to 1e-5 at epoch 300; the lr then stays there for the 10 cooldown epochs
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=310)
custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook', on_error='raise'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
