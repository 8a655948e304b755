#!/usr/bin/env bash
# Usage: [GPUS=16 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args]
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
run_srun "$1" "$2" "$ROOT/tools/train.py" "$3" --work-dir="${4:-work_dirs/$2}" "${@:5}"
