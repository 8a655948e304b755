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
]
comparisons = [('tlalign', 'transmix')]
