# Swin-T, TokenMix arm without a teacher (area labels) on the recipe of swin-t_16xb64_cutmix.py:
# TokenMix's block mask on 14 x 14 cells of 16 px (each 4 x 4 Swin tokens; 112 cells, one mask per
# batch, partner B-1-i) replaces the CutMix branch; the recipe's Mixup branch stays (p = 0.5).
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(
    align=False,
    mix=dict(
        _delete_=True,
        type='RandomChoiceMix',
        mixers=[dict(type='BlockMaskMix', mask_ratio=0.5, min_tokens=14, cell_size=16),
                dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8)],
        probs=[0.5, 0.5]))
