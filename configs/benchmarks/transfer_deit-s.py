# Transfer DeiT-S: each ImageNet cell of imagenet_deit-s.py (every arm x 3 seeds), then its
# checkpoint (model.backbone.init_cfg.checkpoint) fine-tuned on CIFAR-100 with a short recipe
# (configs/tlalign/transfer/deit-s_ft-cifar100.py), beside its evaluation stages. Point
# --work-dir at the ImageNet suite's folder to reuse its finished cells.
#
#   python tools/benchmark.py transfer_deit-s --gpus 8 --work-dir work_dirs/benchmarks/imagenet_deit-s
_base_ = './imagenet_deit-s.py'

downstream = [
    dict(name='cifar100', label='CIFAR-100 fine-tune (10 epochs)',
         config='configs/tlalign/transfer/deit-s_ft-cifar100.py',
         metrics=[dict(name='CIFAR-100 top-1', key='accuracy/top1')]),
]
