#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 tools/dist_train.sh CONFIG 8
# Without GPUs it runs GPUS processes on the CPU (gloo).
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
run_torchrun "$2" "$ROOT/tools/train.py" "$1" "${@:3}"
