#!/usr/bin/env bash
# Usage: [GPUS=16 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# GPUS: processes in all (default 8); GPUS_PER_NODE: per node (default min(GPUS, 8)). On a
# CPU-only cluster (no GPU GRES), or with GPUS_PER_NODE=0, no GPUs are asked for and the
# processes train on the CPUs. See README "Running on a cluster".
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
need_positional WORK_DIR 'tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]' "$@"
run_srun "$1" "$2" "$ROOT/tools/train.py" "$3" --work-dir="$4" "${@:5}"
