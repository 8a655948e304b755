# The embedded suite (what the main job, tools/run_demo.sh, runs): a small ViT on Fashion-MNIST
# (configs/tlalign/demo/), CutMix against TL-Align and TransMix, 3 seeds. All arms share one
# recipe and, seed by seed, the initial weights, data order and CutMix boxes; only the label of
# the mixed image differs, so the arms are compared by paired differences over seeds.
#
#   python tools/benchmark.py fmnist                      # all arms, 3 seeds
#   python tools/benchmark.py fmnist --arms cutmix tlalign --seeds 0 1 2 3 4
#   python tools/benchmark.py fmnist --cfg-options train_cfg.max_epochs=8
seeds = [0, 1, 2]
metrics = ['top-1']
arms = [
    dict(name='cutmix', label='CutMix', config='configs/tlalign/demo/fmnist_vit_cutmix.py'),
    dict(name='tlalign', label='TL-Align', config='configs/tlalign/demo/fmnist_vit_tlalign.py',
         baseline='cutmix'),
    dict(name='transmix', label='TransMix',
         config='configs/tlalign/demo/fmnist_vit_transmix.py', baseline='cutmix'),
    # dense token labels (opt-in, not in the main job's default arms; tools/demo.py --arms
    # cutmix tlalign tlalign-dense origin-dense): TL-Align plus a loss on every output token,
    # against its traced share ('tlalign-dense') or the share its patch started with
    # ('origin-dense', MixToken's label)
    dict(name='tlalign-dense', label='TL-Align + token labels',
         config='configs/tlalign/demo/fmnist_vit_tlalign-dense.py', baseline='cutmix'),
    dict(name='origin-dense', label='TL-Align + origin token labels',
         config='configs/tlalign/demo/fmnist_vit_origin-dense.py', baseline='cutmix'),
    # the peers (opt-in too; docs/en/user_guides/peers.md): MixPro's MaskMix (4 x 4 cells of
    # one token) with PAL ('mixpro') or area labels ('maskmix', MixPro as released), SMMix,
    # TokenMix's block mask (9 of 16 tokens) with area labels, and TL-Align on both masks. Each
    # mask replaces CutMix on every batch; recipe, initial weights and data order stay the suite's
    dict(name='mixpro', label='MixPro (MaskMix + PAL)',
         config='configs/tlalign/demo/fmnist_vit_mixpro.py', baseline='cutmix'),
    dict(name='maskmix', label='MaskMix', config='configs/tlalign/demo/fmnist_vit_maskmix.py',
         baseline='cutmix'),
    dict(name='smmix', label='SMMix', config='configs/tlalign/demo/fmnist_vit_smmix.py',
         baseline='cutmix'),
    dict(name='tokenmix', label='TokenMix (block mask, area labels)',
         config='configs/tlalign/demo/fmnist_vit_tokenmix.py', baseline='cutmix'),
    dict(name='tlalign-maskmix', label='TL-Align on MaskMix',
         config='configs/tlalign/demo/fmnist_vit_tlalign-maskmix.py', baseline='cutmix'),
    dict(name='tlalign-tokenmix', label='TL-Align on TokenMix masks',
         config='configs/tlalign/demo/fmnist_vit_tlalign-tokenmix.py', baseline='cutmix'),
]
comparisons = [('tlalign', 'transmix'), ('tlalign-dense', 'tlalign'),
               ('origin-dense', 'tlalign'), ('tlalign-dense', 'origin-dense'),
               ('mixpro', 'tlalign'), ('maskmix', 'tlalign'), ('smmix', 'tlalign'),
               ('tokenmix', 'tlalign'), ('tlalign-maskmix', 'tlalign'),
               ('tlalign-tokenmix', 'tlalign'), ('tlalign-maskmix', 'maskmix'),
               ('tlalign-tokenmix', 'tokenmix'), ('mixpro', 'maskmix')]
# Evaluation stages, run on every arm x seed's final checkpoint (no retraining; a rerun skips
# finished stages; mmtlalign/evaluation/stages.py): occlusion of 10-90% of the 16 patch tokens,
# the image cut into 2x2 / 4x4 shuffled blocks, the 15 ImageNet-C corruptions x 5 severities
# (imagecorruptions-imaug, on the first 500 test images: 37,500 corrupted images per cell) and
# calibration (ECE with 15 bins, NLL) of the clean test images. Same perturbed images in every
# arm and seed (each image draws from a fixed seed and its own index).
evaluation = [
    dict(kind='occlusion'),
    dict(kind='patch_shuffle', grids=[2, 4]),
    dict(kind='corruption', num_images=500),
    dict(kind='calibration'),
]
