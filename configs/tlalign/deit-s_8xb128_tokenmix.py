# DeiT-S, TokenMix arm without a teacher (area labels of the block mask) on exactly the recipe of
# deit-s_8xb128_cutmix.py: TokenMix's block mask (112 of the 14 x 14 tokens, one mask per batch,
# partner B-1-i) replaces grid CutMix on every batch. TokenMix's own recipe: configs/peers/.
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(
    align=False,
    mix=dict(_delete_=True, type='BlockMaskMix', mask_ratio=0.5, min_tokens=14, cell_size=16))
