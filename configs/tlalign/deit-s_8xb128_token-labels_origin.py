# Ablation of deit-s_8xb128_token-labels.py: every output patch token is supervised with the
# share it started with (where its patch came from: MixToken's label, without LV-ViT's
# teacher) instead of the share TL-Align traced to it. It separates "dense" from "traced". The
# class token keeps TL-Align's label; only model.token_loss.labels differs.
_base_ = './deit-s_8xb128_token-labels.py'

model = dict(token_loss=dict(labels='origin'))
