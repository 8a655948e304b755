# Mask R-CNN + FPN on COCO (1x) with the dense-supervised TL-Align Swin-T backbone
# (configs/tlalign/swin-t_16xb64_token-labels.py: TL-Align plus a loss on each last-stage token
# against its traced label). Everything as mask-rcnn_tlalign-swin-t_fpn_1x_coco.py; only the
# checkpoint differs (a TL-Align classifier checkpoint, prefix='backbone.'; a separate token
# head, if trained with one, is not part of the backbone and is not loaded).
#
#   bash tools/dist_train.sh configs/tlalign/coco/mask-rcnn_tlalign-swin-t-token-labels_fpn_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TOKEN-LABELS-SWIN-T.pth
_base_ = './mask-rcnn_tlalign-swin-t_fpn_1x_coco.py'

pretrained = 'work_dirs/swin-t_16xb64_token-labels/epoch_300.pth'  # the ImageNet classifier

model = dict(backbone=dict(init_cfg=dict(checkpoint=pretrained)))
