# Downstream Swin-T: each ImageNet cell of imagenet_swin-t.py (CutMix, TL-Align x 3 seeds), then
# its checkpoint (model.backbone.init_cfg.checkpoint) fine-tuned on ADE20K (UperNet, 160k iters)
# and COCO (Mask R-CNN 1x). Point --work-dir at the ImageNet suite's folder to reuse its
# finished cells (same arms, seeds and options: they are skipped, not retrained).
#
#   python tools/benchmark.py downstream_swin-t --gpus 8 \
#       --work-dir work_dirs/benchmarks/imagenet_swin-t
#   python tools/benchmark.py downstream_swin-t --launcher slurm --partition P --dry-run
#
# Reference numbers are mmseg's / mmdet's metafiles for the same architectures from the official
# (non-TL-Align) ImageNet weights, for orientation only (configs/tlalign/README.md); the paper
# gives no downstream numbers that could be verified.
_base_ = './imagenet_swin-t.py'

downstream = [
    dict(name='ade20k', label='ADE20K UperNet',
         config='configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py',
         metrics=[dict(name='ADE20K mIoU', key='mIoU', reference={'mmseg (official weights)':
                                                                   44.41})]),
    dict(name='coco', label='COCO Mask R-CNN 1x',
         config='configs/tlalign/coco/mask-rcnn_tlalign-swin-t_fpn_1x_coco.py',
         metrics=[
             dict(name='COCO box AP', key='coco/bbox_mAP', scale=100,
                  reference={'mmdet (official weights)': 42.7}),
             dict(name='COCO mask AP', key='coco/segm_mAP', scale=100,
                  reference={'mmdet (official weights)': 39.3}),
         ]),
]
