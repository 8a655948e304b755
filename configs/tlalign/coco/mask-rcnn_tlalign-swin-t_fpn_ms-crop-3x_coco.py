# Mask R-CNN + FPN with a TL-Align Swin-T backbone on COCO, 3x schedule (36 epochs) with
# multi-scale + crop augmentation -- mmdet's Swin-T ms-crop-3x recipe unchanged, only the
# backbone differs. See mask-rcnn_tlalign-swin-t_fpn_1x_coco.py for usage.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

custom_imports = dict(
    imports=['mmtlalign'], allow_failed_imports=False)

pretrained = 'work_dirs/swin-t_16xb64/epoch_300.pth'  # the TL-Align ImageNet classifier

model = dict(
    backbone=dict(
        _delete_=True,
        type='AlignedSwinTransformer',
        arch='tiny',
        img_size=224,
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

custom_hooks = [dict(type='DownstreamChecksHook')]
