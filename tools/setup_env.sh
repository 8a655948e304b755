#!/usr/bin/env bash
# Create (or check) the project's virtual environment at <repo>/.venv.
#
# Idempotent: on a ready machine it verifies the environment and returns in seconds.
# The slow part of a fresh set-up is compiling mmcv 2.1.0 with its ops (about 10 minutes on
# 2 cores). The built wheel is cached outside the repo, keyed by mmcv, torch, CUDA and Python
# versions, because pip's own wheel cache is keyed by the sdist only and would silently reuse a
# wheel compiled against another torch.
#
# Environment knobs:
#   PYTHON=python3.11          interpreter used to create .venv
#   MMTLALIGN_CACHE=~/.cache/mmtlalign   where built mmcv wheels are kept
#   MAX_JOBS=N                 parallel compile jobs for mmcv (default: number of cores)
#   FORCE_CUDA=1|0             build mmcv CUDA ops (default: 1 when nvcc and a GPU are present)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PINS="$ROOT/requirements/pins.txt"
TEST_REQS="$ROOT/requirements/tests.txt"
CACHE="${MMTLALIGN_CACHE:-$HOME/.cache/mmtlalign}"
STAMP="$VENV/.mmtlalign-setup"

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
pin() { sed -n "s/^$1==//p" "$PINS"; }

# The stamp records what this environment was built from; any change to the pins or to this
# script invalidates it.
wanted_stamp() {
  cat "$PINS" "$TEST_REQS" "${BASH_SOURCE[0]}" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}

# mmcv 2.1.0's setup.py hard-codes -std=c++14/17, but torch >= 2.10 headers need C++20
# ("#error C++20 or later compatible compiler is required to use ATen"). We build the pinned,
# hash-checked sdist with only that flag changed; mmcv's sources compile unchanged under C++20.
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
fetch_mmcv_source() {
  local dest="$1" tmp
  [[ -f "$dest/.patched" ]] && return 0
  tmp="$(mktemp -d)"
  "${PIP[@]}" download "${PIP_QUIET[@]}" --no-deps --no-binary :all: --no-build-isolation \
    -d "$tmp" "mmcv==$MMCV_V" >/dev/null
  echo "$MMCV_SDIST_SHA256  $tmp/mmcv-$MMCV_V.tar.gz" | sha256sum -c --quiet - \
    || die "mmcv-$MMCV_V.tar.gz does not match its pinned sha256"
  rm -rf "$dest" && mkdir -p "$dest"
  tar xzf "$tmp/mmcv-$MMCV_V.tar.gz" -C "$dest" --strip-components=1
  sed -i 's/-std=c++1[47]/-std=c++20/g' "$dest/setup.py"
  touch "$dest/.patched"
  rm -rf "$tmp"
}

verify_env() {
  "$VENV/bin/python" -W ignore - <<'PY'
import torch, torchvision, mmcv, mmengine, mmpretrain, mmdet, mmseg  # noqa: F401
from mmcv.ops import nms  # fails when mmcv was built without its compiled ops
import mmdet.models, mmseg.models, mmtlalign  # noqa: F401
print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}, mmtlalign {mmtlalign.__version__}, cuda available: {torch.cuda.is_available()}')
PY
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(wanted_stamp)" ]]; then
  if out=$(verify_env 2>&1); then
    say "environment ready: $out"
    exit 0
  fi
  say "environment at $VENV is stamped but broken; repairing:"
  printf '%s\n' "$out" | tail -n 3
fi

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH; set PYTHON=/path/to/python3.11"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 9), sys.version' \
  || die "Python >= 3.9 is needed (OpenMMLab 2.x); set PYTHON=/path/to/python3"

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIP_QUIET=(-q --progress-bar off)

say "step 1/4: build tools, numpy, torch $(pin torch) + torchvision $(pin torchvision) (a matching pair, ~5 GB on first install)"
"${PIP[@]}" install "${PIP_QUIET[@]}" --upgrade pip wheel ninja "setuptools==$(pin setuptools)"
"${PIP[@]}" install "${PIP_QUIET[@]}" "numpy==$(pin numpy)" "opencv-python==$(pin opencv-python)" \
  "torch==$(pin torch)" "torchvision==$(pin torchvision)"

read -r TORCH_V CUDA_V PY_V HAS_GPU < <("$VENV/bin/python" -c '
import sys, torch
print(torch.__version__.split("+")[0], torch.version.cuda or "none",
      f"py{sys.version_info[0]}{sys.version_info[1]}", int(torch.cuda.is_available()))')
if [[ -z "${FORCE_CUDA:-}" ]]; then
  if [[ "$HAS_GPU" == 1 ]] && command -v nvcc >/dev/null; then FORCE_CUDA=1; else FORCE_CUDA=0; fi
fi
OPS=$([[ "$FORCE_CUDA" == 1 ]] && echo "cu${CUDA_V}" || echo "cpuops")
MMCV_V="$(pin mmcv)"
KEY="mmcv-${MMCV_V}_torch-${TORCH_V}_${OPS}_${PY_V}"
WHEEL_DIR="$CACHE/wheels/$KEY"

if ! compgen -G "$WHEEL_DIR/mmcv-*.whl" >/dev/null; then
  jobs="${MAX_JOBS:-$(nproc)}"
  log="$CACHE/logs/$KEY.log"
  rm -rf "$WHEEL_DIR.partial"
  mkdir -p "$WHEEL_DIR.partial" "$(dirname "$log")"
  say "step 2/4: compiling mmcv $MMCV_V with ops ($OPS) against torch $TORCH_V, MAX_JOBS=$jobs."
  say "          This is the long step: about 10 minutes on 2 cores, once per (mmcv, torch, CUDA, Python)."
  say "          Full log: $log"
  src="$CACHE/src/mmcv-$MMCV_V"
  fetch_mmcv_source "$src"
  ( cd "$src" && export MAX_JOBS="$jobs" FORCE_CUDA MMCV_WITH_OPS=1 &&
    exec "${PIP[@]}" wheel -v --no-deps --no-build-isolation --no-cache-dir \
      -w "$WHEEL_DIR.partial" . ) >"$log" 2>&1 &
  pid=$!
  start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    step=$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' "$log" 2>/dev/null | tail -n 1 | tr -d ' []' || true)
    say "          ... mmcv build running for $((SECONDS - start))s, compiled ${step:-0/?} objects"
  done
  wait "$pid" || { tail -n 30 "$log" >&2; die "mmcv build failed; see $log"; }
  mv "$WHEEL_DIR.partial" "$WHEEL_DIR"  # only a finished build gets the real name
  say "          mmcv built in $((SECONDS - start))s and cached in $WHEEL_DIR"
else
  say "step 2/4: using cached mmcv wheel $WHEEL_DIR"
fi

say "step 3/4: mmcv, mmengine, mmpretrain, mmdet, mmsegmentation and test tools"
"${PIP[@]}" install "${PIP_QUIET[@]}" --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
# Pins are passed as constraints so that nothing upgrades torch, numpy or mmcv behind our back.
"${PIP[@]}" install "${PIP_QUIET[@]}" -c "$PINS" \
  "mmcv==$MMCV_V" "mmengine==$(pin mmengine)" "mmpretrain==$(pin mmpretrain)" \
  "mmdet==$(pin mmdet)" "mmsegmentation==$(pin mmsegmentation)" \
  "ftfy==$(pin ftfy)" "regex==$(pin regex)" "matplotlib==$(pin matplotlib)" -r "$TEST_REQS"
"${PIP[@]}" install "${PIP_QUIET[@]}" --no-deps --no-build-isolation -e "$ROOT"

say "step 4/4: verifying imports and compiled ops"
out=$(verify_env) || die "verification failed (see the traceback above)"
say "environment ready: $out"
wanted_stamp >"$STAMP"
