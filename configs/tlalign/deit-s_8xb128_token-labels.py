# TL-Align DeiT-S with dense token labels: deit-s_8xb128.py (TL-Align) plus a loss on every
# output patch token against its own traced label (1 - s_i) * y_a + s_i * y_b, s_i the partner
# share TL-Align traced to token i -- the labels TL-Align computes anyway and discards. No
# teacher, no extra pass. Token Labeling's (LV-ViT) form: the shared head classifies the 196
# patch tokens after the final norm, weight 0.5 x their mean loss (label smoothing 0.1 as the
# class token's), logged as loss_token. Only model.token_loss differs from deit-s_8xb128.py;
# deit-s_8xb128_token-labels_origin.py is the same with each token's starting (MixToken) share.
_base_ = './deit-s_8xb128.py'

model = dict(token_loss=dict(weight=0.5, labels='traced', head='shared'))
