# Demo, MaskMix arm (MixPro as released: its configs turn PAL off, so area labels): the recipe of
# fmnist_vit_cutmix.py with MixPro's MaskMix instead of CutMix on every batch. MixPro cuts 224 px
# into a 4 x 4 grid of 56-px cells; here 28 px into 4 x 4 cells of 7 px = one cell per token
# (the same 16 cells, lambda = ceil(16 r) / 16). Partners: a random permutation of the batch.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_maskmix.py
_base_ = './fmnist_vit_cutmix.py'

model = dict(align=False, mix=dict(_delete_=True, type='MaskMix', alpha=1.0, cell_size=7))
