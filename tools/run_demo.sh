#!/usr/bin/env bash
# The main job (the README's first command): set up (or check) the project's environment, then
# run the embedded canvas suite (configs/benchmarks/fmnist_canvas.py): a small ViT on Fashion-MNIST
# garments placed on a 56x56 canvas, with CutMix and TL-Align labels, 3 seeds each, and on every
# model the label-fidelity stage (each label rule against the share of the garments' pixels);
# print the table and a verdict that only names differences beyond the seed noise; write plots to
# work_dirs/demo/. About 15 minutes on 2 idle CPU cores (plus the one-time set-up); a GPU is used
# when present. --suite fmnist: the fast 28x28 suite (CutMix, TL-Align, TransMix; about 7-13 min).
#
#   bash tools/run_demo.sh                                   # defaults
#   bash tools/run_demo.sh --arms cutmix tlalign transmix oracle --seeds 0 1 2 3 4
#   bash tools/run_demo.sh --suite fmnist                    # the fast suite
#   bash tools/run_demo.sh --budget 2                        # 2x the images per cell
#   bash tools/run_demo.sh --data /path/to/imagenet_layout_folder
#   bash tools/run_demo.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
source "$ROOT/tools/_launch.sh"
exec "$PYTHON" "$ROOT/tools/demo.py" "$@"
