#!/usr/bin/env bash
# The main job (the README's first command): set up (or check) the project's environment, then
# train a small ViT on Fashion-MNIST with TL-Align and with the same-recipe CutMix baseline,
# print a comparison table and write plots to work_dirs/demo/. A few minutes on 2 CPU cores
# (plus the one-time set-up); a GPU is used when present.
#
#   bash tools/run_demo.sh                          # defaults: 6,000 images, 5 epochs
#   bash tools/run_demo.sh --subset 0 --epochs 30   # all 60,000 images, longer
#   bash tools/run_demo.sh --data /path/to/imagenet_layout_folder
#   bash tools/run_demo.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
source "$ROOT/tools/_launch.sh"
exec "$PYTHON" "$ROOT/tools/demo.py" "$@"
