# MixPro's DeiT-S recipe with PAL on (the paper's method; the released configs set PAL_ATTN False
# since Sep 2023): mixpro_deit-s-p14_8xb128_in1k.py with Progressive Attention Labeling on the
# MaskMix batches (hard labels there, gradient through alpha, as main.py:287-311).
_base_ = './mixpro_deit-s-p14_8xb128_in1k.py'

model = dict(align='PALLabel')
