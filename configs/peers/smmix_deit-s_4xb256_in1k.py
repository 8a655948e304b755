# SMMix's released DeiT-S recipe (ChenMnZ/SMMix script/train.sh, README, main.py defaults;
# ../../../shared/PEERS.md section 2.1), for reproduction beside the same-recipe arm
# (configs/tlalign/deit-s_8xb128_smmix.py).
#
# - DeiT-S/16, drop path 0.1; 4 x 256 = 1024 images per step, lr 5e-4 x 1024 / 512 = 1e-3,
#   AdamW wd 0.05, 5 warm-up epochs, cosine, 300 epochs (the scheduler's 10 cooldown epochs
#   never run in the release);
# - per batch: SMMix (p 0.5) else Mixup 0.8 (partner B-1-i), no CutMix;
# - labels: SMMixLabel (area label + fine-grained token loss + consistency loss, weights 1);
# - label smoothing 0.1, RandAugment m9, **random erasing 0**, no repeated augmentation, no
#   gradient clipping; no EMA (the release creates one and never updates it).
_base_ = '../tlalign/deit-s_8xb128_cutmix.py'

model = dict(
    align='SMMixLabel',
    mix=dict(
        _delete_=True,
        type='RandomChoiceMix',
        mixers=[
            dict(type='SMMix', min_side_ratio=0.25, max_side_ratio=0.75),
            dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8, pairing='flip'),
        ],
        probs=[0.5, 0.5]))

# the DeiT pipeline of the base (deit-s_8xb128_cutmix.py) without random erasing
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow',
         color_type='color_ignore_orientation'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=256,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
