# UperNet with a TL-Align Swin-T backbone on ADE20K: 512x512 crops, 160k iterations, 8 GPUs x 2
# images, AdamW lr 6e-5 -- mmseg's Swin-T recipe unchanged, only the backbone (mmpretrain's Swin
# with TL-Align ImageNet weights) differs. TL-Align is a pre-training method: fine-tuning runs the
# plain forward. Validation/test: single-scale mIoU (IoUMetric); *_ms.py: multi-scale + flip.
#
#   bash tools/dist_train.sh configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TL-ALIGN-SWIN-T.pth
#
# The checkpoint is a TL-Align classifier checkpoint (configs/tlalign/swin-t_16xb64.py), loaded
# with prefix='backbone.'; for a backbone-only file (tools/model_converters/cls_to_backbone.py)
# also set model.backbone.init_cfg.prefix=None. Data: data/ade/ADEChallengeData2016 (override
# {train,val,test}_dataloader.dataset.data_root).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(
    imports=['mmtlalign'], allow_failed_imports=False)

pretrained = 'work_dirs/swin-t_16xb64/epoch_300.pth'  # the TL-Align ImageNet classifier

model = dict(
    pretrained=None,  # mmseg's EncoderDecoder(pretrained=...) breaks mmpretrain backbones
    backbone=dict(
        _delete_=True,
        type='AlignedSwinTransformer',
        arch='tiny',
        img_size=224,
        window_size=7,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

# Fails early, with the fix, on a checkpoint that does not fit the backbone or an mmcv without
# CUDA ops on a GPU run.
custom_hooks = [dict(type='DownstreamChecksHook')]
