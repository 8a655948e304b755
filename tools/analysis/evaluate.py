"""Evaluation stages on a trained checkpoint: ImageNet robustness sets, occlusion, patch
shuffle, corruptions, calibration (logic in :mod:`mmtlalign.evaluation`).

    python tools/analysis/evaluate.py CONFIG CHECKPOINT --stages occlusion patch_shuffle \
        corruption calibration [--work-dir DIR] [--cfg-options k=v ...] [--force]
    python tools/analysis/evaluate.py CONFIG CHECKPOINT --spec '[{"kind": "imagenet_a",
        "data_root": "data/imagenet-a"}]'

Writes DIR/<stage>.json (default DIR: the checkpoint's folder/evaluation); finished stages with
the same settings are skipped when run again.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmtlalign.evaluation.cli import main  # noqa: E402

if __name__ == '__main__':
    main()
