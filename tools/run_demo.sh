#!/usr/bin/env bash
# The main job (the README's first command): set up (or check) the project's environment, then
# run the embedded benchmark suite (configs/benchmarks/fmnist.py): a small ViT on Fashion-MNIST
# with CutMix, TL-Align and TransMix labels, 3 seeds each; print the table and a verdict that only
# names differences beyond the seed noise; write plots to work_dirs/demo/. About 7 minutes on
# 2 CPU cores (plus the one-time set-up); a GPU is used when present.
#
#   bash tools/run_demo.sh                                   # defaults
#   bash tools/run_demo.sh --arms cutmix tlalign --seeds 0 1 2 3 4
#   bash tools/run_demo.sh --budget 2                        # 2x the images per cell
#   bash tools/run_demo.sh --data /path/to/imagenet_layout_folder
#   bash tools/run_demo.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
source "$ROOT/tools/_launch.sh"
exec "$PYTHON" "$ROOT/tools/demo.py" "$@"
