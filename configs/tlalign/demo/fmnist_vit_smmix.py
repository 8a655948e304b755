# Demo, SMMix arm: the recipe of fmnist_vit_cutmix.py with SMMix instead of CutMix on every
# batch. Before mixing, the model itself (eval mode, no gradient) scores each patch by the
# attention it receives in the last block; image i's least attended s x s square receives its
# partner's (B-1-i) most attended one. SMMix draws s from int(14 * 0.25) .. int(14 * 0.75) =
# 3..10 tokens on 14 x 14; on the 4 x 4 grid here 1..3 (partner share 1/16, 4/16 or 9/16).
# Labels: area for the class token, plus the fine-grained token loss (own token head) and the
# consistency loss, weights 1 (mmtlalign.models.labels.SMMixLabel).
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_smmix.py
_base_ = './fmnist_vit_cutmix.py'

model = dict(align='SMMixLabel',
             mix=dict(_delete_=True, type='SMMix', min_side_ratio=0.25, max_side_ratio=0.75))
