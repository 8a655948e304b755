# TransMix arm (Chen et al., CVPR 2022) on exactly the recipe of the CutMix and TL-Align arms:
# the same mixer, backbone and schedule as deit-b_8xb128_cutmix.py; only the labels differ.
# The partner share of the target is 1/2 the area share + 1/2 the class token's last-block
# attention to the partner's patches (over its attention to all patches).
_base_ = './deit-b_8xb128_cutmix.py'

# a rule's type name (or dict(_delete_=True, type='TransMixLabel'), as align is a bool in the base)
model = dict(align='TransMixLabel')
