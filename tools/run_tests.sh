#!/usr/bin/env bash
# The test command: set up (or check) .venv, then run the whole test suite.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
# Tests start many short tool processes; passive OpenMP waiting keeps idle threads from
# spinning on the (often 2) cores the others need.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-2}" \
  OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "$ROOT/.venv/bin/python" -m pytest -q --durations=40 "$@"
