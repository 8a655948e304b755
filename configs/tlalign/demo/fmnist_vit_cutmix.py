# Demo, CutMix arm: the main recipe (configs/tlalign/deit-s_8xb128_cutmix.py: AdamW, cosine
# schedule, grid-aligned CutMix alpha=1, label smoothing 0.1, TLAlignClassifier with area-ratio
# labels) shrunk to a small DeiT-style ViT on Fashion-MNIST that learns the task (> 80% top-1)
# on a CPU core in a minute or two.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_cutmix.py
#
# The data is prepared on first use from Debian's `dataset-fashion-mnist` package (else
# mmpretrain's download) in $MMTLALIGN_CACHE/fashion-mnist (default ~/.cache/mmtlalign).
# Defaults (one cell of tools/run_demo.sh): the first 20,000 training images (the files are in
# shuffled order), 4 epochs at batch 32, validated on the first 2,000 test images. All the data
# and longer: --cfg-options train_dataloader.dataset.indices=None \
#   val_dataloader.dataset.indices=None train_cfg.max_epochs=10
# The TL-Align and TransMix arms (fmnist_vit_{tlalign,transmix}.py) differ only in model.align.
#
# Retuned for a short budget (issue 14). Top-1 on the 2,000 test images, seed 0, batch 32,
# AdamW 1e-3, cosine: the old ViT (6 blocks, 96 dims) with random crop + flip, on 7-px patches,
# reached 57% after 20,000 training images without any mixing and 47% with CutMix (the old
# 4-px-patch demo: 54-59% after 30,000); 64 dims, 4 blocks, 7-px patches (a 4x4 token grid, 3x
# cheaper per image than 4-px ones) without crop/flip: 74% without mixing, and with CutMix 72% /
# 79% / 82% after 20k / 40k / 60k images (6 blocks: 83% after 60k). The crop and flip held it
# back at this budget, not the data. These defaults (6 blocks,
# pixel CutMix boxes, 80k images) give 82.3-83.4% in every arm and seed (README, "The main job").
_base_ = '../deit-s_8xb128_cutmix.py'

custom_imports = dict(imports=['mmtlalign', 'mmtlalign.datasets'], allow_failed_imports=False)

num_classes = 10
fmnist_root = '{{$MMTLALIGN_CACHE:~/.cache/mmtlalign}}/fashion-mnist'

model = dict(
    align=False,
    # The aligned backbone in both arms: its forward() is bit-identical to mmpretrain's
    # VisionTransformer, so the arms differ only in the labels, and both can be traced by
    # tools/analysis/token_fluctuation.py.
    backbone=dict(
        type='AlignedVisionTransformer',
        arch=dict(_delete_=True, embed_dims=64, num_layers=6, num_heads=4,
                  feedforward_channels=256),
        img_size=28,
        patch_size=7,  # a 4x4 token grid (+ class token)
        in_channels=1,
        drop_path_rate=0.0),
    head=dict(num_classes=num_classes, in_channels=64),
    # Pixel boxes (box_grid=1): snapped to the coarse 4x4 grid, the recipe's boxes would be
    # empty in 24% of the batches and give the partner 15% of the image on average; pixel boxes
    # are never empty here and give it 30% (as CutMix does on ImageNet), so the label rules have
    # something to act on. Tokens the box edge cuts get fractional shares, which TL-Align and
    # TransMix take exactly.
    mix=dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.0, prob=1.0, mode='batch',
             box_grid=1))

# Fashion-MNIST mean / std (0.286, 0.353) in 0-255, one grey channel
data_preprocessor = dict(
    _delete_=True, num_classes=num_classes, mean=[72.94], std=[90.01], to_rgb=False)

# no crop/flip: at this budget they cost 15-20 points (above); CutMix is the augmentation
train_pipeline = [dict(type='PackInputs')]
# The dataset gives 28x28 grey arrays (these steps leave them unchanged); mmpretrain's
# ImageClassificationInferencer gives image files read as 3-channel BGR, of any size: made grey
# (ITU-R 601 luma) and 28x28 here, so the 1-channel model also takes them.
test_pipeline = [
    dict(type='RandomGrayscale', prob=1.0, channel_weights=(0.114, 0.587, 0.299)),
    dict(type='ResizeEdge', scale=28, edge='short'),
    dict(type='CenterCrop', crop_size=28),
    dict(type='PackInputs'),
]

# prepared on first use (Debian package, else mmpretrain's download)
fmnist = dict(type='PreparedFashionMNIST', data_root=fmnist_root, download=True)
train_dataloader = dict(
    batch_size=32,
    # the arrays are in memory and packing is cheap: worker processes would only compete for
    # the cores (the demo runs two cells side by side)
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, split='train', indices=20000, pipeline=train_pipeline,
                 **fmnist),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, split='test', indices=2000, pipeline=test_pipeline, **fmnist),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=1)
# lr 1e-3 (the recipe's, for its 1024 images per step) also suits this small model at batch 32
# (2e-3 was no better); warm-up 0.3 epoch (~10% of the steps), then cosine to the end
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=0.3, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0.3,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=32)

# the recipe's hooks, plus: every 500 iterations a grid of the batch's mixed images with their
# share maps, traced block by block (where the labels moved; area labels: the mix only) to the
# visualizer: <work_dir>/<timestamp>/vis_data/vis_image/share_maps_<iter>.png (and TensorBoard
# with --tensorboard). Off in the ImageNet recipes.
custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook', on_error='raise'),
    dict(type='ShareMapHook', interval=500, num_images=4),
]
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_last=True))
# same seed in every arm: same initial weights, data order and CutMix boxes
randomness = dict(seed=0, deterministic=False)
