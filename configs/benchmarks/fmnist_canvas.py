# The canvas suite (issue 33): the embedded Fashion-MNIST suite (fmnist.py) with every garment
# on a 56x56 black canvas, at a random whole-garment position for training and centred for
# validation and test (configs/tlalign/demo/fmnist_canvas_vit_*.py, RandomCanvas), the same ViT
# on 7-px patches, an 8x8 token grid. The garment covers a quarter of the image, so a CutMix box
# often lands on background and its area share is not the share of the visible garment it
# carries: here the label rules really differ (on 28x28 Fashion-MNIST the traced labels move
# 0.010 from the area labels, here about 0.04). Same pairing as fmnist.py: seed by seed, the arms
# share initial weights, data order, canvas positions and CutMix boxes.
#
#   python tools/benchmark.py fmnist_canvas --work-dir work_dirs/canvas   # 4 arms, 3 seeds
#   python tools/benchmark.py fmnist_canvas --arms cutmix tlalign --seeds 0 1 2 3 4
#   python tools/demo.py                      # the main job: CutMix and TL-Align, 3 seeds
seeds = [0, 1, 2]
metrics = ['top-1']
arms = [
    dict(name='cutmix', label='CutMix',
         config='configs/tlalign/demo/fmnist_canvas_vit_cutmix.py'),
    dict(name='tlalign', label='TL-Align',
         config='configs/tlalign/demo/fmnist_canvas_vit_tlalign.py', baseline='cutmix'),
    dict(name='transmix', label='TransMix',
         config='configs/tlalign/demo/fmnist_canvas_vit_transmix.py', baseline='cutmix'),
    # the oracle: trained on the content share itself (the fraction of the visible garment
    # pixels that comes from the partner; possible only where the objects' pixels are known):
    # the upper bound on what better labels can do for accuracy in this regime
    dict(name='oracle', label='Oracle (content share)',
         config='configs/tlalign/demo/fmnist_canvas_vit_oracle.py', baseline='cutmix'),
]
comparisons = [('tlalign', 'transmix'), ('oracle', 'tlalign')]
# Evaluation stages on every arm x seed's final checkpoint (mmtlalign/evaluation/):
# label fidelity (mmtlalign/evaluation/label_fidelity.py): on fixed, seeded CutMix pairs of the
# centred test images, each label rule's partner share (area, TransMix, TL-Align traced through
# that model) against the content share of the garments' visible pixels: MAE, correlation, and
# each rule's MAE minus the area label's, paired within the model (far less noisy than top-1);
# and calibration (ECE with 15 bins, NLL) of the test images.
evaluation = [
    dict(kind='label_fidelity'),
    dict(kind='calibration'),
]
