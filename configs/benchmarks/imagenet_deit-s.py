# ImageNet-1k DeiT-S, 300 epochs, 3 seeds: the paper's comparison plus TransMix and mmpretrain's
# DeiT recipe. CutMix, TransMix and TL-Align share one recipe (grid-aligned CutMix alpha 1, no
# Mixup, label smoothing 0.1) and differ only in the label rule; the same seed gives the three
# arms the same initial weights, data order and CutMix boxes, so differences are paired by seed.
#
#   python tools/benchmark.py imagenet_deit-s --gpus 8                  # one node, cell by cell
#   python tools/benchmark.py imagenet_deit-s --gpus 8 --dry-run        # the commands only
#   python tools/benchmark.py imagenet_deit-s --launcher slurm --partition P --gpus 8
#
# Reference numbers (../shared/DESIGN.md), top-1 at 224: the paper's baseline row is DeiT's own
# recipe (79.8) and its TL-Align row 80.6 (official TL-Align README); mmpretrain 1.2.0's DeiT-S
# recipe (Mixup 0.8 + CutMix 1.0) reports 80.69. No TransMix number is given there.
_base_ = './_base_/imagenet_evaluation.py'  # robustness + calibration stages
seeds = [0, 1, 2]
metrics = ['top-1']
arms = [
    dict(name='deit', label='DeiT recipe (Mixup+CutMix)',
         config='configs/tlalign/deit-s_8xb128_deit.py',
         reference=dict(paper=79.8, mmpretrain=80.69)),
    dict(name='cutmix', label='CutMix', config='configs/tlalign/deit-s_8xb128_cutmix.py'),
    dict(name='transmix', label='TransMix', config='configs/tlalign/deit-s_8xb128_transmix.py',
         baseline='cutmix'),
    dict(name='tlalign', label='TL-Align', config='configs/tlalign/deit-s_8xb128.py',
         baseline='cutmix', reference=dict(paper=80.6)),
    # dense token labels: TL-Align + a loss on every patch token against its traced share, and
    # the ablation with each token's starting (MixToken) share; no published number
    dict(name='tlalign-dense', label='TL-Align + token labels',
         config='configs/tlalign/deit-s_8xb128_token-labels.py', baseline='cutmix'),
    dict(name='origin-dense', label='TL-Align + origin token labels',
         config='configs/tlalign/deit-s_8xb128_token-labels_origin.py', baseline='cutmix'),
    # the peers on this recipe (docs/en/user_guides/peers.md): each mask replaces grid CutMix on
    # every batch, nothing else changes. Their own released recipes: configs/peers/ (references:
    # MixPro 81.3 with patch 14, SMMix 81.1, TokenMix 80.8 with teacher maps)
    dict(name='mixpro', label='MixPro (MaskMix + PAL)',
         config='configs/tlalign/deit-s_8xb128_mixpro.py', baseline='cutmix'),
    dict(name='maskmix', label='MaskMix', config='configs/tlalign/deit-s_8xb128_maskmix.py',
         baseline='cutmix'),
    dict(name='smmix', label='SMMix', config='configs/tlalign/deit-s_8xb128_smmix.py',
         baseline='cutmix'),
    dict(name='tokenmix', label='TokenMix (block mask, area labels)',
         config='configs/tlalign/deit-s_8xb128_tokenmix.py', baseline='cutmix'),
    dict(name='tlalign-maskmix', label='TL-Align on MaskMix',
         config='configs/tlalign/deit-s_8xb128_tlalign-maskmix.py', baseline='cutmix'),
    dict(name='tlalign-tokenmix', label='TL-Align on TokenMix masks',
         config='configs/tlalign/deit-s_8xb128_tlalign-tokenmix.py', baseline='cutmix'),
]
# the method against the one the paper argues against, paired by seed as well
comparisons = [('tlalign', 'transmix'), ('tlalign-dense', 'tlalign'),
               ('origin-dense', 'tlalign'), ('tlalign-dense', 'origin-dense'),
               ('mixpro', 'tlalign'), ('smmix', 'tlalign'), ('tokenmix', 'tlalign'),
               ('tlalign-maskmix', 'maskmix'), ('tlalign-tokenmix', 'tokenmix'),
               ('mixpro', 'maskmix')]
