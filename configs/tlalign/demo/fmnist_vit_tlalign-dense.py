# Demo, TL-Align + dense token labels: fmnist_vit_tlalign.py plus a loss on each of the 16
# output patch tokens against its own traced label (the shares TL-Align traces to every token
# and otherwise discards), 0.5 x the mean over tokens, through the shared head. Only
# model.token_loss differs from the TL-Align arm.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_tlalign-dense.py
_base_ = './fmnist_vit_tlalign.py'

model = dict(token_loss=dict(weight=0.5, labels='traced', head='shared'))
