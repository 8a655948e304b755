# Ablation of swin-t_16xb64_token-labels.py: each last-stage token is supervised with its
# starting share (the mean share of the 32x32-pixel region it merges: MixToken's label)
# instead of its traced share. Only model.token_loss.labels differs.
_base_ = './swin-t_16xb64_token-labels.py'

model = dict(token_loss=dict(labels='origin'))
