# DeiT-S, MaskMix arm (MixPro's mixer with area labels, as MixPro's released configs run it) on
# exactly the recipe of deit-s_8xb128_cutmix.py: MaskMix replaces grid CutMix on every batch.
# MixPro's 4 x 4 grid of 56-px cells is kept; on 16-px patches the cell edges at 56 and 168 px
# cut tokens, which get fractional partner shares (all label rules take them exactly).
# MixPro's own recipe (patch 14, Mixup/CutMix alternation): configs/peers/.
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(align=False, mix=dict(_delete_=True, type='MaskMix', alpha=1.0, cell_size=56))
