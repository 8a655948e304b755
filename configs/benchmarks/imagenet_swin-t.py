# ImageNet-1k Swin-T, 300 epochs, 3 seeds: TL-Align against the same-recipe CutMix baseline.
# (No TransMix arm: TransMix weighs the partner by class-token attention and Swin has no class
# token.) Paired by seed: same initial weights, data order and CutMix boxes in both arms.
#
#   python tools/benchmark.py imagenet_swin-t --gpus 8
#   python tools/benchmark.py imagenet_swin-t --launcher slurm --partition P --gpus 16 --dry-run
#
# Reference numbers (../shared/DESIGN.md): the official TL-Align README (paper) and mmpretrain
# 1.2.0's Swin-T recipe, top-1 at 224.
_base_ = './_base_/imagenet_evaluation.py'  # robustness + calibration stages
seeds = [0, 1, 2]
metrics = ['top-1']
arms = [
    dict(name='cutmix', label='CutMix', config='configs/tlalign/swin-t_16xb64_cutmix.py',
         reference=dict(paper=81.2, mmpretrain=81.18)),
    dict(name='tlalign', label='TL-Align', config='configs/tlalign/swin-t_16xb64.py',
         baseline='cutmix', reference=dict(paper=81.4)),
    # dense token labels on the 7x7 last-stage tokens: traced shares, and the starting-share
    # ablation; no published number
    dict(name='tlalign-dense', label='TL-Align + token labels',
         config='configs/tlalign/swin-t_16xb64_token-labels.py', baseline='cutmix'),
    dict(name='origin-dense', label='TL-Align + origin token labels',
         config='configs/tlalign/swin-t_16xb64_token-labels_origin.py', baseline='cutmix'),
    # the peers that work without a class token (docs/en/user_guides/peers.md): MaskMix (MixPro's
    # released Swin-T runs it with area labels; PAL reads a class token) and TokenMix's block
    # mask, each replacing the recipe's CutMix branch, with area labels and with TL-Align. No
    # SMMix arm: its released code has no Swin, and its patch scores read a global ViT attention
    dict(name='maskmix', label='MaskMix', config='configs/tlalign/swin-t_16xb64_maskmix.py',
         baseline='cutmix'),
    dict(name='tokenmix', label='TokenMix (block mask, area labels)',
         config='configs/tlalign/swin-t_16xb64_tokenmix.py', baseline='cutmix'),
    dict(name='tlalign-maskmix', label='TL-Align on MaskMix',
         config='configs/tlalign/swin-t_16xb64_tlalign-maskmix.py', baseline='cutmix'),
    dict(name='tlalign-tokenmix', label='TL-Align on TokenMix masks',
         config='configs/tlalign/swin-t_16xb64_tlalign-tokenmix.py', baseline='cutmix'),
]
comparisons = [('tlalign-dense', 'tlalign'), ('origin-dense', 'tlalign'),
               ('tlalign-dense', 'origin-dense'), ('tlalign-maskmix', 'maskmix'),
               ('tlalign-tokenmix', 'tokenmix'), ('tlalign-maskmix', 'tlalign')]
