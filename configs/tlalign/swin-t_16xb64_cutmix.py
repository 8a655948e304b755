# Same-recipe plain-CutMix baseline for TL-Align Swin-T (swin-t_16xb64.py differs only in
# model.align). No TL-Align Swin code was released: the recipe is mmpretrain's Swin-T recipe,
# which is the official Swin training the paper's Swin baselines come from, unchanged
# (300 epochs, 16 GPUs x 64 = 1024 images per step, AdamW lr 1e-3, cosine with 20 warm-up epochs,
# grad clip 5, label smoothing 0.1, drop path 0.2, the Swin data pipeline with RandAugment and
# random erasing, no EMA), with its Mixup 0.8 / CutMix 1.0 batch augments replaced by TLAlignMix
# (same alphas, one of the two per batch with probability 0.5, area-ratio labels). CutMix boxes
# snap to the 4-pixel patch grid (set mix.box_grid=32 to align them with the last stage).
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

custom_imports = dict(imports=['mmtlalign'], allow_failed_imports=False)

# mmpretrain's runtime visualizer, declared here instead of inherited: inherited through
# `mmpretrain::`, mmengine tags the dict with _scope_='mmpretrain', and mmpretrain's
# browse_dataset passes it as keyword arguments to UniversalVisualizer(**cfg.visualizer),
# which refuses that key (`--cfg-options` cannot delete it). The same visualizer, untagged.
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

model = dict(
    type='TLAlignClassifier',
    align=False,
    # The aligned backbone here too: same weights and a bit-identical forward() as mmpretrain's
    # SwinTransformer, so this file and swin-t_16xb64.py differ only in the labels (the
    # paper's residual weight r = 0.5 is its default).
    backbone=dict(type='AlignedSwinTransformer'),
    # mixing happens in the classifier, not in the data preprocessor's batch augments
    train_cfg=None,
    mix=dict(
        type='TLAlignMix',
        cutmix_alpha=1.0,
        mixup_alpha=0.8,
        switch_prob=0.5,
        prob=1.0,
        mode='batch'))

# Reliability for long runs, as in deit-s_8xb128_cutmix.py: atomic checkpoints, exact resume
# (random and mixer state per process), stop on a non-finite loss, bad-data checks.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook', on_error='raise'),
]
