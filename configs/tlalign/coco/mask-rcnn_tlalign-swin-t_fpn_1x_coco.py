# Mask R-CNN + FPN with a TL-Align Swin-T backbone on COCO, 1x schedule (12 epochs, 8 GPUs x 2
# images, AdamW lr 1e-4) -- mmdet's Swin-T recipe unchanged, only the backbone (mmpretrain's Swin
# with TL-Align ImageNet weights) differs. Box and mask AP via CocoMetric. TL-Align is a
# pre-training method: fine-tuning runs the plain forward.
#
#   bash tools/dist_train.sh configs/tlalign/coco/mask-rcnn_tlalign-swin-t_fpn_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TL-ALIGN-SWIN-T.pth
#
# Data: data/coco/{train2017,val2017,annotations}. The evaluators' ann_file is a full path built
# from data_root, so another location needs {train,val,test}_dataloader.dataset.data_root=DIR/
# and {val,test}_evaluator.ann_file=DIR/annotations/instances_val2017.json.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

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
