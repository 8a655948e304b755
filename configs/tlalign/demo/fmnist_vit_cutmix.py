# Demo, CutMix arm: the main recipe (configs/tlalign/deit-s_8xb128_cutmix.py: AdamW, cosine
# schedule, grid-aligned CutMix alpha=1, label smoothing 0.1, TLAlignClassifier with area-ratio
# labels) shrunk to a small DeiT-style ViT on Fashion-MNIST that trains on a CPU in minutes.
#
#   python tools/train.py configs/tlalign/demo/fmnist_vit_cutmix.py
#
# The data is prepared on first use from Debian's `dataset-fashion-mnist` package (else
# mmpretrain's download) in $MMTLALIGN_CACHE/fashion-mnist (default ~/.cache/mmtlalign).
# Defaults (what tools/run_demo.sh runs): the first 6,000 training images (the files are in
# shuffled order), 2,000 test images for validation, 5 epochs at batch 32. All the data and
# longer training: --cfg-options train_dataloader.dataset.indices=None \
#   val_dataloader.dataset.indices=None train_cfg.max_epochs=30
# The TL-Align arm (fmnist_vit_tlalign.py) differs only in model.align.
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
        arch=dict(_delete_=True, embed_dims=96, num_layers=6, num_heads=3,
                  feedforward_channels=384),
        img_size=28,
        patch_size=4,  # a 7x7 token grid; CutMix boxes snap to it
        in_channels=1,
        drop_path_rate=0.0),
    head=dict(num_classes=num_classes, in_channels=96),
    mix=dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.0, prob=1.0, mode='batch'))

# Fashion-MNIST mean / std (0.286, 0.353) in 0-255, one grey channel
data_preprocessor = dict(
    _delete_=True, num_classes=num_classes, mean=[72.94], std=[90.01], to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
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
    num_workers=2,
    persistent_workers=True,
    dataset=dict(_delete_=True, split='train', indices=6000, pipeline=train_pipeline, **fmnist),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(_delete_=True, split='test', indices=2000, pipeline=test_pipeline, **fmnist),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=1)
# lr 1e-3 (the recipe's, for its 1024 images per step) also suits this small model at batch 32
# (it learned fastest in short runs; 3e-3 diverged, 5e-4 and 2.5e-4 were slower)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=32)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_last=True))
# same seed in both arms: same initial weights, data order and CutMix boxes
randomness = dict(seed=0, deterministic=False)
