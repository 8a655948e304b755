# Evaluation stages of the ImageNet suites (imagenet_deit-s.py, imagenet_swin-t.py and what
# inherits them), run on every arm x seed's final checkpoint after its training: the
# robustness sets in their published layouts, and on the clean validation set occlusion, patch
# shuffle and calibration (mmtlalign/evaluation/stages.py). A set that is not there is reported
# once and skipped (never scored). Point a stage at its data with the environment variable in
# its data_root (read when the suite is loaded), e.g.
#
#   IMAGENET_A_ROOT=/datasets/imagenet-a python tools/benchmark.py imagenet_deit-s --gpus 8
#
# ImageNet-V2: the matched-frequency set, folders 0..999; ImageNet-A / -R: 200 wnid folders,
# scored over their 200 classes' logits; ImageNet-Sketch: the `sketch` folder of 1000 wnids;
# ImageNet-C: <corruption>/<severity>/<wnid>/*.JPEG, mCE normalised by AlexNet's errors.
evaluation = [
    dict(kind='imagenet_v2',
         data_root='{{$IMAGENET_V2_ROOT:data/imagenetv2-matched-frequency-format-val}}'),
    dict(kind='imagenet_a', data_root='{{$IMAGENET_A_ROOT:data/imagenet-a}}'),
    dict(kind='imagenet_r', data_root='{{$IMAGENET_R_ROOT:data/imagenet-r}}'),
    dict(kind='imagenet_sketch', data_root='{{$IMAGENET_SKETCH_ROOT:data/imagenet-sketch/sketch}}'),
    dict(kind='imagenet_c', data_root='{{$IMAGENET_C_ROOT:data/imagenet-c}}'),
    # the clean validation set: occlusion of 16x16 patches (DeiT's tokens; Swin's patch
    # embedding is 4 px, so the same 16-px grid is used for both), shuffled blocks, calibration
    dict(kind='occlusion', patch_size=16),
    dict(kind='patch_shuffle', grids=[2, 4]),
    dict(kind='calibration'),
]
