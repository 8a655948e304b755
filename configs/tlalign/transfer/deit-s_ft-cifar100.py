# Transfer: a DeiT-S ImageNet checkpoint (any arm of configs/benchmarks/imagenet_deit-s.py)
# fine-tuned on CIFAR-100 at 224x224, with a short recipe: 10 epochs, SGD momentum 0.9, lr 0.01
# at total batch 512, 1-epoch warm-up then cosine, no weight decay, gradient clipping 1.0,
# random-resized crop + flip, label smoothing 0.1. A plain mmpretrain ImageClassifier with
# mmpretrain's VisionTransformer (TL-Align changes only the pre-training labels: the weights
# load as they are), a new 100-class head. The short recipe ranks pre-trainings; it is not
# the long transfer schedule of the DeiT paper (which fine-tunes for 1000 epochs).
#
#   python tools/train.py configs/tlalign/transfer/deit-s_ft-cifar100.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/deit-s_8xb128/epoch_300.pth
#   python tools/benchmark.py transfer_deit-s --gpus 8     # every arm x seed of the DeiT suite
#
# Data: mmpretrain's CIFAR100 layout, data/cifar100/cifar-100-python/{train,test,meta}
# (download=True fetches it on first use).
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['mmtlalign'], allow_failed_imports=False)

# mmpretrain's runtime visualizer, declared here instead of inherited: inherited through
# `mmpretrain::`, mmengine tags the dict with _scope_='mmpretrain', and mmpretrain's
# browse_dataset passes it as keyword arguments to UniversalVisualizer(**cfg.visualizer),
# which refuses that key (`--cfg-options` cannot delete it). The same visualizer, untagged.
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

num_classes = 100
pretrained = 'work_dirs/deit-s_8xb128/epoch_300.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16,
        drop_path_rate=0.1,
        # a classifier checkpoint of an ImageNet cell: its backbone.* weights
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead', num_classes=num_classes, in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

# the normalisation the ImageNet pre-training used; CIFAR arrays are RGB already
data_preprocessor = dict(num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=False)
train_pipeline = [
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(224, 224), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
dataset = dict(type='CIFAR100', data_root='data/cifar100', download=True)
train_dataloader = dict(
    batch_size=64, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(split='train', pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    batch_size=128, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(split='test', pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)  # 8 GPUs x 64
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1, save_last=True))
