# TL-Align Swin-T with dense token labels: swin-t_16xb64.py (TL-Align) plus a loss on each of
# the 7x7 last-stage tokens (after its norm, before the pooling) against its own traced label
# (1 - s_i) * y_a + s_i * y_b, s_i traced through the shifted windows, padding and patch
# merging. The shared head classifies the tokens, weight 0.5 x their mean loss (label
# smoothing 0.1), logged as loss_token. Only model.token_loss differs from swin-t_16xb64.py.
_base_ = './swin-t_16xb64.py'

model = dict(token_loss=dict(weight=0.5, labels='traced', head='shared'))
