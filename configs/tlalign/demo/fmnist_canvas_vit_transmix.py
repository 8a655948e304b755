# Canvas demo, TransMix arm: identical to fmnist_canvas_vit_cutmix.py except that the partner's
# share of the CutMix label is the mean of its area share and of the last block's class-token
# attention to its patches.
#
#   python tools/train.py configs/tlalign/demo/fmnist_canvas_vit_transmix.py
_base_ = './fmnist_canvas_vit_cutmix.py'

model = dict(align='TransMixLabel')  # the rule's registered name
