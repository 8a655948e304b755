# Swin-T, MaskMix arm (MixPro's released Swin-T: MaskMix with area labels; PAL needs a class
# token) on the recipe of swin-t_16xb64_cutmix.py: MaskMix (4 x 4 cells of 56 px, as MixPro's
# Swin config) replaces the CutMix branch; the Mixup branch of the recipe stays (p = 0.5 each,
# as the recipe switches Mixup / CutMix). 56-px cells align with stage-1/2 tokens (4/8 px), not
# with stage 3/4 (16/32 px): TL-Align's patch merging averages the shares there.
_base_ = './swin-t_16xb64_cutmix.py'

model = dict(
    align=False,
    mix=dict(
        _delete_=True,
        type='RandomChoiceMix',
        mixers=[dict(type='MaskMix', alpha=1.0, cell_size=56),
                dict(type='TLAlignMix', cutmix_alpha=0.0, mixup_alpha=0.8)],
        probs=[0.5, 0.5]))
