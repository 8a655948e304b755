"""Token fluctuation, made visible on a trained model (logic in
:mod:`mmtlalign.analysis.token_fluctuation`).

    python tools/analysis/token_fluctuation.py CONFIG CHECKPOINT [--out-dir DIR]
        [--num-batches 8] [--batch-size 64] [--num-maps 4] [--mode elem|batch] [--seed 0]
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmtlalign.analysis.token_fluctuation import main  # noqa: E402

if __name__ == '__main__':
    main()
