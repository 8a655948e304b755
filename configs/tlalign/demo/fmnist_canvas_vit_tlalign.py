# Canvas demo, TL-Align arm: identical to fmnist_canvas_vit_cutmix.py except that the CutMix
# labels are aligned to the tokens (TL-Align) instead of the area ratio.
#
#   python tools/train.py configs/tlalign/demo/fmnist_canvas_vit_tlalign.py
_base_ = './fmnist_canvas_vit_cutmix.py'

model = dict(align=True, backbone=dict(residual_weight=0.5))
