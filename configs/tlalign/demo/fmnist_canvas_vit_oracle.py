# Canvas demo, oracle arm: identical to fmnist_canvas_vit_cutmix.py except that the partner's
# share of the CutMix label is the content share, the fraction of the visible garment pixels
# (data_sample.fg_mask of both images) that comes from the partner. Only possible where the
# objects' pixels are known; the upper bound that says whether better labels can change
# accuracy at all in this regime.
#
#   python tools/train.py configs/tlalign/demo/fmnist_canvas_vit_oracle.py
_base_ = './fmnist_canvas_vit_cutmix.py'

model = dict(align='ContentLabel')  # the rule's registered name
