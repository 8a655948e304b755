# UperNet + MultiLevelNeck on ADE20K with the dense-supervised TL-Align DeiT-S backbone
# (configs/tlalign/deit-s_8xb128_token-labels.py: TL-Align plus a loss on every output patch
# token against its traced label). Everything as
# upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py; only the checkpoint differs. The
# token head ('separate') or the shared head's token use is a pre-training matter: the
# backbone keys are those of any mmpretrain ViT and load with prefix='backbone.'.
#
#   bash tools/dist_train.sh configs/tlalign/ade20k/upernet_tlalign-deit-s-token-labels_mln_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TOKEN-LABELS-DEIT-S.pth
_base_ = './upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py'

pretrained = 'work_dirs/deit-s_8xb128_token-labels/epoch_300.pth'  # the ImageNet classifier

model = dict(backbone=dict(init_cfg=dict(checkpoint=pretrained)))
