# Demo, TokenMix arm without a teacher (area labels): the recipe of fmnist_vit_cutmix.py with
# TokenMix's block mask instead of CutMix on every batch: one BEiT-style block mask per batch,
# partner image B-1-i. TokenMix masks int(0.5 N) + 14 of N = 196 tokens (112, 57%); on the 4 x 4
# token grid here int(0.5 * 16) + 1 = 9 (56%), blocks smaller than the grid side as in BEiT.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_tokenmix.py
_base_ = './fmnist_vit_cutmix.py'

model = dict(
    align=False,
    mix=dict(_delete_=True, type='BlockMaskMix', mask_ratio=0.5, min_tokens=1, cell_size=None))
