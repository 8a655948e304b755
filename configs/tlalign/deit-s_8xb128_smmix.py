# DeiT-S, SMMix arm on exactly the recipe of deit-s_8xb128_cutmix.py: SMMix replaces grid CutMix
# on every batch (square side 3..10 tokens; the model's own no-grad pass picks the squares), with
# SMMix's labels and losses (area label, fine-grained token loss with its own token head,
# consistency loss; weights 1). SMMix's own recipe (Mixup alternation): configs/peers/.
_base_ = './deit-s_8xb128_cutmix.py'

model = dict(align='SMMixLabel',
             mix=dict(_delete_=True, type='SMMix', min_side_ratio=0.25, max_side_ratio=0.75))
