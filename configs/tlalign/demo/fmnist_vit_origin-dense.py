# Demo, TL-Align + dense origin labels (the ablation of fmnist_vit_tlalign-dense.py): each
# output patch token is supervised with the share its patch started with (MixToken's label)
# instead of its traced share. Class token: TL-Align's label, as in the other two arms.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_origin-dense.py
_base_ = './fmnist_vit_tlalign-dense.py'

model = dict(token_loss=dict(labels='origin'))
