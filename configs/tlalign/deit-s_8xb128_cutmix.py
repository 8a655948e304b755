# Same-recipe baseline for TL-Align DeiT-S: the paper's recipe with plain (area-ratio) CutMix
# labels. 300 epochs, 8 GPUs x 128 = 1024 images per step, AdamW lr 1e-3, cosine with 5 warm-up
# epochs, grid-aligned CutMix alpha=1, no Mixup, label smoothing 0.1, no EMA; the DeiT data
# pipeline (RandAugment, random erasing) of mmpretrain.
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

custom_imports = dict(imports=['mmtlalign'], allow_failed_imports=False)

model = dict(
    type='TLAlignClassifier',
    align=False,
    # mixing happens in the classifier, not in the data preprocessor's batch augments
    train_cfg=None,
    mix=dict(type='TLAlignMix', cutmix_alpha=1.0, mixup_alpha=0.0, prob=1.0, mode='batch'))

train_dataloader = dict(batch_size=128)

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

# lr 1e-3 is for 1024 images per step; --auto-scale-lr rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=1024)

# Reliability for long runs (mmtlalign.engine): checkpoints written atomically (a process killed
# while saving leaves the previous checkpoint and last_checkpoint valid); every checkpoint holds
# the random state (global generators, TL-Align mixer, per process) and --resume restores it at
# the right point of the data stream; a NaN/Inf loss stops the run without saving its weights;
# missing/truncated/corrupt images and empty class folders are named before or when met
# (DataCheckHook(on_error='skip') logs and skips them instead).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='DataCheckHook', on_error='raise'),
]
