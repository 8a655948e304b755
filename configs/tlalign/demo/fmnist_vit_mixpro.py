# Demo, MixPro arm (the paper's method): MaskMix (fmnist_vit_maskmix.py) labelled by Progressive
# Attention Labeling: the class token's last-block attention share weighted by alpha = cos(area
# target, prediction), hard labels on MaskMix batches, gradient through alpha, as released
# (mmtlalign.models.labels.PALLabel).
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_mixpro.py
_base_ = './fmnist_vit_maskmix.py'

model = dict(align='PALLabel')
