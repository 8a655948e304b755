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

# run_srun PARTITION JOB_NAME SCRIPT [ARGS...]; sizes via GPUS, GPUS_PER_NODE, CPUS_PER_TASK
run_srun() {
  local partition=$1 job_name=$2
  shift 2
  # shellcheck disable=SC2086  # SRUN_ARGS is a list of options
  exec srun -p "$partition" --job-name="$job_name" --gres=gpu:"${GPUS_PER_NODE:-8}" \
    --ntasks="${GPUS:-8}" --ntasks-per-node="${GPUS_PER_NODE:-8}" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$@" --launcher slurm
}
