# UperNet with a TL-Align DeiT-S backbone on ADE20K, through mmseg's MultiLevelNeck (the plain
# ViT's blocks 3/6/9/12 rescaled x4/x2/x1/x0.5): 512x512 crops, 160k iterations, 8 GPUs x 2
# images, AdamW lr 6e-5 -- mmseg's DeiT-S (ln, mln) recipe unchanged, only the backbone
# (mmpretrain's ViT with TL-Align ImageNet weights, out_type='featmap') differs. TL-Align is a
# pre-training method: fine-tuning runs the plain forward. Single-scale mIoU (IoUMetric);
# *_ms.py: multi-scale + flip.
#
#   bash tools/dist_train.sh configs/tlalign/ade20k/upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/TL-ALIGN-DEIT-S.pth
#
# The checkpoint is a TL-Align classifier checkpoint (configs/tlalign/deit-s_8xb128.py), loaded
# with prefix='backbone.' (the 224px position embedding is resized to the 32x32 grid on load).
_base_ = 'mmseg::vit/vit_deit-s16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(
    imports=['mmtlalign'], allow_failed_imports=False)

pretrained = 'work_dirs/deit-s_8xb128/epoch_300.pth'  # the TL-Align ImageNet classifier

model = dict(
    pretrained=None,  # mmseg's EncoderDecoder(pretrained=...) breaks mmpretrain backbones
    backbone=dict(
        _delete_=True,
        type='AlignedVisionTransformer',
        arch='deit-small',
        img_size=512,
        patch_size=16,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        final_norm=True,
        drop_path_rate=0.1,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

custom_hooks = [dict(type='DownstreamChecksHook')]
