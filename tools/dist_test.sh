#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]  (NNODES etc. as dist_train.sh)
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
run_torchrun "$3" "$ROOT/tools/test.py" "$1" "$2" "${@:4}"
