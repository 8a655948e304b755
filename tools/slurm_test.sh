#!/usr/bin/env bash
# Usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# Sizes and CPU-only clusters as in tools/slurm_train.sh.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
need_positional CHECKPOINT 'tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]' "$@"
run_srun "$1" "$2" "$ROOT/tools/test.py" "$3" "$4" "${@:5}"
