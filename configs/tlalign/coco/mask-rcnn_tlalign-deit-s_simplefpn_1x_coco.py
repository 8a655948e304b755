# Mask R-CNN with a plain TL-Align DeiT-S backbone on COCO, 1x schedule (12 epochs, 8 GPUs x 2
# images). The ViT gives one stride-16 map (last block, out_type='featmap'); mmtlalign's
# SimpleFeaturePyramid (ViTDet's simple pyramid: deconvolutions / pooling, strides 4-64) feeds
# mmdet's Mask R-CNN heads. Optimiser and schedule as mmdet's Swin-T 1x (AdamW lr 1e-4, weight
# decay 0.05, none on norms/position embedding/class token). No published number to compare
# with: a reference recipe, not a reproduction.
#
#   bash tools/dist_train.sh configs/tlalign/coco/mask-rcnn_tlalign-deit-s_simplefpn_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TL-ALIGN-DEIT-S.pth
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(
    imports=['mmtlalign'], allow_failed_imports=False)

pretrained = 'work_dirs/deit-s_8xb128/epoch_300.pth'  # the TL-Align ImageNet classifier

model = dict(
    backbone=dict(
        _delete_=True,
        type='AlignedVisionTransformer',
        arch='deit-small',
        img_size=1024,
        patch_size=16,
        out_indices=(11, ),
        out_type='featmap',
        final_norm=True,
        drop_path_rate=0.1,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=384,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,
        norm_cfg=dict(type='LN2d', eps=1e-6)))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            '.ln': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))

custom_hooks = [dict(type='DownstreamChecksHook')]
