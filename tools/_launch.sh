# Sourced by the shell launchers: the project's .venv python (unless PYTHON is set) and the
# torchrun / srun invocations.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# run_torchrun NPROC_PER_NODE SCRIPT [ARGS...]; multi-node via NNODES, NODE_RANK, MASTER_ADDR, PORT
run_torchrun() {
  local nproc=$1
  shift
  exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$nproc" "$@" --launcher pytorch
}

# run_srun PARTITION JOB_NAME SCRIPT [ARGS...]
# Sizes: GPUS (tasks in all, default 8), GPUS_PER_NODE (tasks and GPUs per node, default
# min(GPUS, 8)), CPUS_PER_TASK (default 5), SRUN_ARGS (more srun options, e.g. --account=A).
# The job asks for GPUs (--gres=gpu:GPUS_PER_NODE) only when the partition has GPU GRES and
# GPUS_PER_NODE > 0: on a CPU-only cluster, or with GPUS_PER_NODE=0, it runs GPUS processes on
# the CPUs (gloo).
run_srun() {
  local partition=$1 job_name=$2
  shift 2
  local gpus=${GPUS:-8}
  local per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
  if ! [[ $gpus =~ ^[0-9]+$ && $gpus -ge 1 ]]; then
    echo "error: GPUS=$gpus: the number of processes must be a whole number >= 1." >&2; exit 2
  fi
  if ! [[ $per_node =~ ^[0-9]+$ ]]; then
    echo "error: GPUS_PER_NODE=$per_node must be a whole number (0: no GPUs, CPU processes)." >&2
    exit 2
  fi
  local size=(--ntasks="$gpus")
  if [[ $per_node -gt 0 ]]; then
    size+=(--ntasks-per-node="$per_node")
    if partition_has_gpus "$partition"; then size+=(--gres=gpu:"$per_node"); fi
  fi
  # shellcheck disable=SC2086  # SRUN_ARGS is a list of options
  exec srun -p "$partition" --job-name="$job_name" "${size[@]}" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$@" --launcher slurm
}

# partition_has_gpus PARTITION: true when a node of the partition has GPU GRES (sinfo %G).
partition_has_gpus() {
  local gres
  gres=$(sinfo -h -p "$1" -o %G 2>/dev/null) || return 0  # cannot tell: ask, as before
  [[ $gres == *gpu* ]]
}

# need_positional WHAT USAGE ARGS...: refuse a missing 4th argument (WHAT) or an option in its place.
need_positional() {
  local what=$1 usage=$2
  shift 2
  if [[ $# -lt 4 ]]; then
    echo "error: $what is missing; usage: $usage" >&2; exit 2
  fi
  if [[ $4 == -* ]]; then
    echo "error: '$4' is in the $what position (the 4th argument); usage: $usage" >&2; exit 2
  fi
}
