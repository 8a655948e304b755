#!/usr/bin/env bash
# Create (or check) the project's virtual environment at <repo>/.venv.
#
# Idempotent: on a ready machine it verifies the environment and returns in seconds.
# The slow part of a fresh set-up is compiling mmcv 2.1.0 with its ops (about 10 minutes on
# 2 cores). The built wheel is cached outside the repo, keyed by mmcv, torch, CUDA (with the
# GPU architectures it was compiled for) and Python versions, because pip's own wheel cache is
# keyed by the sdist only and would silently reuse a wheel compiled against another torch.
#
# Every package but torch/torchvision (and what only they need) and mmcv is installed from
# requirements/lock.txt with pip --require-hashes: exact versions, each file checked against the
# SHA-256 hashes kept in the repository, online and offline alike. torch + torchvision come from
# the registry or PyTorch's index (their files differ per CUDA build), or, offline, from the
# machine; mmcv is built here from its sdist, checked against MMCV_SDIST_SHA256 below.
#
# Usage: bash tools/setup_env.sh [--print-plan | --download DIR | --offline DIR | --lock]
#   --print-plan   print the decisions (torch build, GPUs, FORCE_CUDA, CUDA_HOME, architectures,
#                  mmcv cache key) for the torch already in the venv, and exit; installs nothing.
#   --download DIR write a wheelhouse for machines without internet: the locked wheels (for
#                  this Python, PYTHON=... for another), hash-checked as they are downloaded,
#                  and the hash-checked mmcv sdist.
#   --offline DIR  install from that wheelhouse with no network (pip --no-index) into a venv
#                  that reuses the torch + torchvision of PYTHON (default python3) and builds
#                  mmcv's ops against it (CUDA ops when nvcc is there; TORCH_CUDA_ARCH_LIST).
#                  Every wheel is checked against requirements/lock.txt, never against anything
#                  in DIR: a wheelhouse cannot change what is installed.
#   --lock         regenerate requirements/lock.txt from requirements/pins.txt and tests.txt
#                  (uv pip compile --generate-hashes; needs the registry). Rerun it after any
#                  change to those files: the install refuses a lock that does not match them.
#
# Environment knobs:
#   PYTHON=python3.11          interpreter used to create .venv
#   MMTLALIGN_VENV=DIR         the virtual environment (default: <repo>/.venv)
#   MMTLALIGN_CACHE=~/.cache/mmtlalign   where built mmcv wheels are kept
#   MAX_JOBS=N                 parallel compile jobs for mmcv (default: number of cores)
#   TORCH_CUDA=cu126|cu128|cu130|cpu   install torch/torchvision (same pinned versions) from
#                              PyTorch's index for that CUDA build, https://download.pytorch.org/whl/$TORCH_CUDA
#                              (default: the registry's pinned pair, the CUDA 13.0 build, which
#                              needs an NVIDIA driver >= 580 and a GPU of sm_75 or newer)
#   TORCH_INDEX_URL=URL        the index to take torch/torchvision from instead (a mirror of it)
#   FORCE_CUDA=1|0             build mmcv CUDA ops (default: 1 when torch sees a GPU and nvcc exists);
#                              1 works without a visible GPU (login nodes): the architectures come
#                              from TORCH_CUDA_ARCH_LIST or torch's own list
#   TORCH_CUDA_ARCH_LIST="8.0;9.0"   GPU architectures for mmcv's CUDA ops (default: all that this
#                              torch build targets); part of the wheel-cache key
#   CUDA_HOME=DIR              the CUDA toolkit for nvcc (default: found from nvcc, torch, /usr/local/cuda);
#                              its CUDA major version must equal torch's
#   ALLOW_CPU_TORCH=1          continue when nvidia-smi sees GPUs that torch cannot use (CPU-only run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMTLALIGN_VENV:-$ROOT/.venv}"
PINS="$ROOT/requirements/pins.txt"
TEST_REQS="$ROOT/requirements/tests.txt"
LOCK="$ROOT/requirements/lock.txt"
UV_VERSION=0.13.9  # the lock's resolver (--lock), installed into $CACHE/uv-$UV_VERSION
CACHE="${MMTLALIGN_CACHE:-$HOME/.cache/mmtlalign}"
STAMP="$VENV/.mmtlalign-setup"

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
pin() { sed -n "s/^$1==//p" "$PINS"; }

# The stamp records what this environment was built from; any change to the pins, the lock,
# this script or the chosen torch build invalidates it.
wanted_stamp() {
  { cat "$PINS" "$TEST_REQS" "$LOCK" "${BASH_SOURCE[0]}" "$ROOT/setup.py"
    echo "${TORCH_CUDA:-}" "${TORCH_INDEX_URL:-}" "${TORCH_CUDA_ARCH_LIST:-}"; } | sha256sum | cut -d' ' -f1
}

# ---- decisions (small functions; tests/test_setup_env.py drives them with faked tools) ----

# torch_spec NAME: the requirement for torch or torchvision: the pinned version, with the
# build's local label when TORCH_CUDA names one (so an installed build of another CUDA
# version does not satisfy it).
torch_spec() {
  echo "$1==$(pin "$1")${TORCH_CUDA:++$TORCH_CUDA}"
}

# torch_index_url: the index torch/torchvision come from, empty for the registry's pinned pair.
torch_index_url() {
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    echo "$TORCH_INDEX_URL"
  elif [[ -n "${TORCH_CUDA:-}" ]]; then
    [[ "$TORCH_CUDA" =~ ^(cu[0-9]{3,}|cpu)$ ]] \
      || die "TORCH_CUDA=$TORCH_CUDA is not a PyTorch build name; use e.g. cu126, cu128, cu130 or cpu."
    echo "https://download.pytorch.org/whl/$TORCH_CUDA"
  fi
}

# probe_torch PYTHON: one line "TORCH_V CUDA_V PY_V HAS_GPU ARCH_FLAGS TORCH_CUDA_HOME"
# (CUDA_V, ARCH_FLAGS and TORCH_CUDA_HOME are "none" when absent; ARCH_FLAGS comma-separated).
# The arch flags are read from the build, not from a device, so they exist without a GPU.
probe_torch() {
  "$1" -W ignore - 2>/dev/null <<'PY'
import sys, torch
flags = ''
if torch.version.cuda:
    get = getattr(torch._C, '_cuda_getArchFlags', None)
    flags = (get() or '') if get else ''
try:
    from torch.utils.cpp_extension import CUDA_HOME as home
except Exception:
    home = None
print(torch.__version__.split('+')[0], torch.version.cuda or 'none',
      f'py{sys.version_info[0]}{sys.version_info[1]}', int(torch.cuda.is_available()),
      ','.join(flags.split()) or 'none', home or 'none')
PY
}

# gpu_count: GPUs the NVIDIA driver sees (0 without nvidia-smi or when it fails).
gpu_count() {
  command -v nvidia-smi >/dev/null || { echo 0; return; }
  nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
}

# (sed reads all of its input: `head` would stop early and nvidia-smi, listing one line per
# GPU, would die of SIGPIPE, which pipefail turns into a failed set-up)
driver_version() {
  { nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null || true; } \
    | sed -n '1{s/ //g;p;}'
}

# min_driver CUDA_MAJOR: the oldest Linux driver that runs that CUDA major's builds.
min_driver() {
  case "$1" in
    13) echo 580 ;; 12) echo 525 ;; 11) echo 450 ;; *) echo 0 ;;
  esac
}

# torch_variant_for_driver DRIVER: the newest PyTorch CUDA build that driver runs.
torch_variant_for_driver() {
  local major=${1%%.*}
  if (( major >= 580 )); then echo cu130
  elif (( major >= 525 )); then echo cu126
  elif (( major >= 450 )); then echo cu118
  else echo none
  fi
}

# check_gpu_visible GPUS TORCH_V CUDA_V HAS_GPU: refuse to go on on the CPU when the driver
# sees GPUs but this torch cannot use them.
check_gpu_visible() {
  local gpus=$1 torch_v=$2 cuda_v=$3 has_gpu=$4
  (( gpus > 0 )) && [[ "$has_gpu" != 1 ]] || return 0
  [[ "${ALLOW_CPU_TORCH:-0}" == 1 ]] && { say "ALLOW_CPU_TORCH=1: ignoring the $gpus GPU(s) torch cannot use"; return 0; }
  local driver fit hint
  driver="$(driver_version)"
  fit="$(torch_variant_for_driver "${driver:-0}")"
  if [[ "$fit" == none ]]; then
    hint="update the NVIDIA driver (>= $(min_driver "${cuda_v%%.*}") for this torch)"
  else
    hint="rerun with TORCH_CUDA=$fit bash tools/setup_env.sh (the torch build for this driver), or update the driver"
  fi
  if [[ "$cuda_v" == none ]]; then
    die "nvidia-smi sees $gpus GPU(s) but torch $torch_v is a CPU-only build. Fix: $hint. (ALLOW_CPU_TORCH=1 continues on the CPU.)"
  fi
  die "nvidia-smi sees $gpus GPU(s) (driver ${driver:-unknown}) but torch $torch_v (CUDA $cuda_v) cannot use them: the CUDA ${cuda_v%%.*} build needs driver >= $(min_driver "${cuda_v%%.*}"). Fix: $hint. (ALLOW_CPU_TORCH=1 continues on the CPU.)"
}

# arch_list_from_flags "sm_75,sm_80,compute_90": "7.5;8.0;9.0+PTX" (TORCH_CUDA_ARCH_LIST form).
arch_list_from_flags() {
  local flag num flags out=() ptx=()
  IFS=',' read -r -a flags <<<"$1"
  for flag in "${flags[@]}"; do
    num="${flag#*_}"
    [[ "$num" =~ ^([0-9]+)([0-9])([a-z]?)$ ]] || continue
    num="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}${BASH_REMATCH[3]}"
    if [[ "$flag" == compute_* ]]; then ptx+=("$num"); else out+=("$num"); fi
  done
  for num in "${ptx[@]}"; do
    local i found=0
    for i in "${!out[@]}"; do
      [[ "${out[$i]}" == "$num" ]] && out[$i]="$num+PTX" && found=1
    done
    (( found )) || out+=("$num+PTX")
  done
  local IFS=';'
  echo "${out[*]}"
}

# arch_key "7.5;8.0;9.0+PTX": "sm75-80-90ptx", the arch part of the wheel-cache key.
arch_key() {
  local list="${1//[ ,]/;}" a archs parts=()
  IFS=';' read -r -a archs <<<"$list"
  for a in "${archs[@]}"; do
    [[ -n "$a" ]] || continue
    a="${a//./}"
    parts+=("${a//+PTX/ptx}")
  done
  local IFS='-'
  echo "sm${parts[*]}"
}

# is_toolkit DIR: DIR holds a CUDA toolkit (bin/nvcc and the runtime headers).
is_toolkit() {
  [[ -x "$1/bin/nvcc" ]] && { [[ -f "$1/include/cuda_runtime.h" ]] \
    || compgen -G "$1/targets/*/include/cuda_runtime.h" >/dev/null; }
}

# find_cuda_home TORCH_CUDA_HOME: the real toolkit: $CUDA_HOME, else the nvcc on PATH with
# symlinks resolved, else the toolkit that nvcc reports (a wrapper script outside the toolkit
# still names it), else torch's guess, else /usr/local/cuda. Empty when none is found.
find_cuda_home() {
  local torch_home="${1:-none}" nvcc real top
  if [[ -n "${CUDA_HOME:-}" ]]; then
    is_toolkit "$CUDA_HOME" || die "CUDA_HOME=$CUDA_HOME is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h there); point it at one, e.g. /usr/local/cuda-12.6."
    echo "$CUDA_HOME"; return
  fi
  if nvcc="$(command -v nvcc)"; then
    real="$(readlink -f "$nvcc")"
    if is_toolkit "$(dirname "$(dirname "$real")")"; then
      dirname "$(dirname "$real")"; return
    fi
    top="$(nvcc_top "$nvcc")"
    if [[ -n "$top" ]] && is_toolkit "$(readlink -f "$top")"; then
      readlink -f "$top"; return
    fi
  fi
  local dir
  for dir in "$torch_home" /usr/local/cuda; do
    if [[ "$dir" != none ]] && is_toolkit "$dir"; then echo "$dir"; return; fi
  done
}

# nvcc_top NVCC: the toolkit directory as nvcc itself reports it (its "TOP", e.g. /usr/local/cuda/bin/..).
nvcc_top() {
  local tmp top
  tmp="$(mktemp -d)"
  : >"$tmp/x.cu"
  top="$(cd "$tmp" && { "$1" --dryrun -c x.cu -o x.o 2>&1 || true; } \
    | sed -n 's/^#\$ TOP=//p' | sed -n '1p')"
  rm -rf "$tmp"
  echo "$top"
}

# nvcc_cuda_version CUDA_HOME: "12.6" from that toolkit's nvcc.
nvcc_cuda_version() {
  { "$1/bin/nvcc" --version 2>/dev/null || true; } \
    | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | sed -n '1p'
}

# cuda_plan TORCH_V CUDA_V PY_V HAS_GPU ARCH_FLAGS TORCH_CUDA_HOME: sets FORCE_CUDA, and for
# CUDA builds CUDA_HOME, TORCH_CUDA_ARCH_LIST and NVCC_CUDA_V; sets the cache KEY. Dies with the
# fix when the combination cannot build.
cuda_plan() {
  local torch_v=$1 cuda_v=$2 py_v=$3 has_gpu=$4 flags=$5 torch_home=$6 gpus
  gpus="$(gpu_count)"
  check_gpu_visible "$gpus" "$torch_v" "$cuda_v" "$has_gpu"
  if [[ -z "${FORCE_CUDA:-}" ]]; then
    FORCE_CUDA=0
    if [[ "$has_gpu" == 1 ]]; then
      local home
      home="$(find_cuda_home "$torch_home")"
      [[ -n "$home" ]] && FORCE_CUDA=1
    fi
  fi
  [[ "$FORCE_CUDA" == 0 || "$FORCE_CUDA" == 1 ]] || die "FORCE_CUDA=$FORCE_CUDA: use 1 (build CUDA ops) or 0."
  NVCC_CUDA_V=none
  if [[ "$FORCE_CUDA" == 1 ]]; then
    [[ "$cuda_v" != none ]] || die "FORCE_CUDA=1 but torch $torch_v is a CPU-only build; choose a CUDA build with TORCH_CUDA=cu126 (or cu128, cu130)."
    CUDA_HOME="$(find_cuda_home "$torch_home")"
    [[ -n "$CUDA_HOME" ]] || die "FORCE_CUDA=1 but no CUDA toolkit was found (no nvcc on PATH, CUDA_HOME unset, no /usr/local/cuda); install the CUDA $cuda_v toolkit and set CUDA_HOME=/path/to/cuda."
    NVCC_CUDA_V="$(nvcc_cuda_version "$CUDA_HOME")"
    [[ -n "$NVCC_CUDA_V" ]] || die "cannot read the CUDA version of $CUDA_HOME/bin/nvcc ('nvcc --version' failed)."
    if [[ "${NVCC_CUDA_V%%.*}" != "${cuda_v%%.*}" ]]; then
      die "nvcc in $CUDA_HOME is CUDA $NVCC_CUDA_V but torch $torch_v was built with CUDA $cuda_v; mmcv's CUDA ops need the same CUDA major. Fix: set CUDA_HOME to a CUDA ${cuda_v%%.*}.x toolkit, or install the torch build for your toolkit (TORCH_CUDA=cu$(echo "$NVCC_CUDA_V" | tr -d .) if PyTorch publishes it), or FORCE_CUDA=0 for CPU-only ops."
    fi
    if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
      [[ "$flags" != none ]] || die "FORCE_CUDA=1: torch $torch_v does not report its GPU architectures; set TORCH_CUDA_ARCH_LIST, e.g. \"8.0;9.0\"."
      TORCH_CUDA_ARCH_LIST="$(arch_list_from_flags "$flags")"
    fi
    export CUDA_HOME TORCH_CUDA_ARCH_LIST
    OPS="cu${cuda_v}_$(arch_key "$TORCH_CUDA_ARCH_LIST")"
  else
    OPS=cpuops
  fi
  GPUS=$gpus
  KEY="mmcv-$(pin mmcv)_torch-${torch_v}_${OPS}_${py_v}"
  WHEEL_DIR="$CACHE/wheels/$KEY"
}

# print_plan: one KEY=VALUE per line.
print_plan() {
  local url
  url="$(torch_index_url)"
  echo "TORCH_INDEX_URL=$url"
  printf '%s\n' "TORCH=$1" "TORCH_CUDA_VERSION=$2" "TORCH_SEES_GPU=$4" "DRIVER_GPUS=$GPUS" \
    "FORCE_CUDA=$FORCE_CUDA"
  if [[ "$FORCE_CUDA" == 1 ]]; then
    printf '%s\n' "CUDA_HOME=$CUDA_HOME" "NVCC_CUDA_VERSION=$NVCC_CUDA_V" \
      "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  fi
  echo "MMCV_CACHE_KEY=$KEY"
  echo "MMCV_WHEEL_DIR=$WHEEL_DIR"
}

# write_mmcv_record: the wheel-cache key and folder of the installed mmcv, next to the stamp,
# for the Python side (mmtlalign.engine.downstream_checks.rebuild_hint), which reads it instead
# of computing a key of its own.
write_mmcv_record() {
  printf 'MMCV_CACHE_KEY=%s\nMMCV_WHEEL_DIR=%s\n' "$KEY" "$WHEEL_DIR" >"$VENV/.mmtlalign-mmcv"
}

# ---- the lock: requirements/lock.txt ----

# Resolved and locked by the lock, not by this script: torch and torchvision (per CUDA build,
# from the registry, PyTorch's index or the offline machine) with what only they need, and mmcv
# (built here from its hash-checked sdist).
UNLOCKED=(torch torchvision mmcv)

# lock_inputs: the requirements the lock is resolved from: the pins (but UNLOCKED) and the test
# tools, mmcv's own runtime requirements (its wheel is installed with --no-deps), and the
# build tools of mmcv's compile.
lock_inputs() {
  local skip
  skip="^($(IFS='|'; echo "${UNLOCKED[*]}"))=="
  grep -vE '^\s*(#|$)' "$PINS" | grep -vE "$skip"
  grep -vE '^\s*(#|$)' "$TEST_REQS"
  printf '%s\n' addict packaging pillow pyyaml yapf  # mmcv 2.1.0's requirements/runtime.txt
  printf '%s\n' pip wheel ninja
}

# lock_problems: one line per requirement of lock_inputs that the lock lacks or locks at
# another version (nothing when they agree).
lock_problems() {
  [[ -f "$LOCK" ]] || { echo "there is no $LOCK"; return; }
  local line name version locked
  while read -r line; do
    name="$(sed -E 's/[ ;=<>!~\[].*//' <<<"$line" | tr 'A-Z_.' 'a-z--')"
    version="$(sed -nE 's/^[^=]*==([^ ;]+).*/\1/p' <<<"$line")"
    locked="$(sed -nE "s/^${name//-/[-_.]}==([^ ;]+).*/\1/Ip" "$LOCK" | sed -n '1p')"
    if [[ -z "$locked" ]]; then
      echo "$name is not in the lock"
    elif [[ -n "$version" && "$locked" != "$version" ]]; then
      echo "$name is locked at $locked, pinned at $version"
    fi
  done < <(lock_inputs)
}

# check_lock: refuse a lock that does not match the pins (before installing anything).
check_lock() {
  local problems
  problems="$(lock_problems)"
  [[ -z "$problems" ]] || die "requirements/lock.txt does not match requirements/pins.txt and tests.txt ($(sed -n 1p <<<"$problems")$( (( $(wc -l <<<"$problems") > 1 )) && echo ", and $(( $(wc -l <<<"$problems") - 1 )) more")); regenerate it: bash tools/setup_env.sh --lock"
}

# lock_subset NAME...: the lock's entries (requirement and hashes) of those packages, for a
# hash-checked install of a few of them (the build tools and numpy before torch and mmcv).
# The names must include their own dependencies (wheel needs packaging): in --require-hashes
# mode pip refuses any requirement the subset does not pin, and a fresh venv has none of them.
lock_subset() {
  local names
  names="$(IFS='|'; echo "$*")"
  awk -v re="^($names)==" '/^[^ #]/ { keep = ($0 ~ re) } keep && !/^ *#/' "$LOCK"
}

# make_lock: --lock. uv resolves the inputs for every platform and Python >= 3.11 with the
# hashes of every file of each version; UNLOCKED are dropped with all that only they need
# (an override no environment satisfies; uv still writes those entries, with that marker, and
# they are removed).
make_lock() {
  local uv tmp never="sys_platform == 'never'" name
  uv="$(command -v uv || true)"
  if [[ -z "$uv" || "$("$uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
    uv="$CACHE/uv-$UV_VERSION/bin/uv"
    if [[ ! -x "$uv" ]]; then
      say "installing uv $UV_VERSION (the lock's resolver) into $CACHE/uv-$UV_VERSION"
      "${PYTHON:-python3}" -m venv "$CACHE/uv-$UV_VERSION"
      "$CACHE/uv-$UV_VERSION/bin/python" -m pip install -q --disable-pip-version-check \
        "uv==$UV_VERSION" || die "could not install uv $UV_VERSION (pip install uv==$UV_VERSION)"
    fi
  fi
  tmp="$(mktemp -d)"
  lock_inputs >"$tmp/pins-and-tests.txt"  # its name stands in the lock's "# via" comments
  for name in "${UNLOCKED[@]}"; do echo "$name; $never"; done >"$tmp/overrides.txt"
  say "resolving $(wc -l <"$tmp/pins-and-tests.txt") requirements with uv $UV_VERSION"
  ( cd "$tmp" && "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
      --no-header --annotation-style line --override overrides.txt -o lock.txt \
      pins-and-tests.txt ) || die "uv could not resolve the pins (see above)"
  { echo "# The exact versions and SHA-256 hashes that tools/setup_env.sh installs (pip --require-hashes),"
    echo "# resolved from requirements/pins.txt and tests.txt by uv $UV_VERSION for every platform, Python >= 3.11."
    echo "# Not here: ${UNLOCKED[*]} and what only they need (see setup_env.sh)."
    echo "# Do not edit; regenerate: bash tools/setup_env.sh --lock"
    awk -v never="; $never" '/^[^ #]/ { drop = (index($0, never) > 0) } !drop' "$tmp/lock.txt"
  } >"$LOCK"
  rm -rf "$tmp"
  check_lock
  say "wrote $LOCK: $(grep -c '^[^ #]' "$LOCK") packages, $(wc -l <"$LOCK") lines"
}

# ---- the build ----

# mmcv 2.1.0's setup.py hard-codes -std=c++14/17, but torch >= 2.10 headers need C++20
# ("#error C++20 or later compatible compiler is required to use ATen"). We build the pinned,
# hash-checked sdist with only that flag changed; mmcv's sources compile unchanged under C++20.
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
fetch_mmcv_source() {
  local dest="$1" tmp
  [[ -f "$dest/.patched" ]] && return 0
  tmp="$(mktemp -d)"
  if [[ -n "${MMCV_SDIST:-}" ]]; then  # --offline: from the wheelhouse
    cp "$MMCV_SDIST" "$tmp/"
  else
    "${PIP[@]}" download "${PIP_QUIET[@]}" --no-deps --no-binary :all: --no-build-isolation \
      -d "$tmp" "mmcv==$MMCV_V" >/dev/null
  fi
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
import imagecorruptions, torchmetrics  # noqa: F401  (the evaluation stages)
print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}, mmtlalign {mmtlalign.__version__}, cuda available: {torch.cuda.is_available()}')
PY
}

# plan_only: --print-plan, from the torch already in the venv.
plan_only() {
  [[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV yet; run bash tools/setup_env.sh once (the plan needs the installed torch)."
  local facts
  facts="$(probe_torch "$VENV/bin/python")" || die "torch is not installed in $VENV yet; run bash tools/setup_env.sh once."
  read -r TORCH_V CUDA_V PY_V HAS_GPU ARCH_FLAGS TORCH_CUDA_HOME <<<"$facts"
  cuda_plan "$TORCH_V" "$CUDA_V" "$PY_V" "$HAS_GPU" "$ARCH_FLAGS" "$TORCH_CUDA_HOME"
  print_plan "$TORCH_V" "$CUDA_V" "$PY_V" "$HAS_GPU"
}

# ---- compute nodes without internet: --download DIR, then --offline DIR there ----

# download_wheelhouse DIR: the locked wheels for PYTHON's version and platform (pip checks each
# against the lock's hashes as it downloads) and the hash-checked mmcv sdist.
download_wheelhouse() {
  local dir=$1 py
  py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || die "no '$py' on PATH; set PYTHON=/path/to/python3.X (the compute nodes' Python version)"
  check_lock
  mkdir -p "$dir"
  say "downloading the $(grep -c '^[^ #]' "$LOCK") locked packages for Python $("$py" -c 'import sys; print(sys.version.split()[0])') into $dir (hash-checked)"
  "$py" -m pip --disable-pip-version-check download -q --no-deps --require-hashes -d "$dir" \
    -r "$LOCK" || die "pip could not download the locked packages (see above)"
  "$py" -m pip --disable-pip-version-check download -q --no-deps --no-binary :all: \
    --no-build-isolation -d "$dir" "mmcv==$(pin mmcv)" >/dev/null
  echo "$MMCV_SDIST_SHA256  $dir/mmcv-$(pin mmcv).tar.gz" | sha256sum -c --quiet - \
    || die "mmcv-$(pin mmcv).tar.gz does not match its pinned sha256"
  say "wheelhouse ready: $(du -sh "$dir" | cut -f1) in $dir; copy it to the machine and run: bash tools/setup_env.sh --offline $dir"
}

# install_locked NAME...: those packages of the lock, hash-checked (all of it without names).
install_locked() {
  local reqs="$LOCK"
  if (( $# )); then
    reqs="$VENV/.mmtlalign-lock-subset.txt"
    lock_subset "$@" >"$reqs"
  fi
  "${PIP[@]}" install "${PIP_QUIET[@]}" --require-hashes -r "$reqs"
}

# install_offline DIR: a venv that reuses PYTHON's torch, everything else from the wheelhouse,
# pip never touching the network (--no-index); mmcv built here against that torch.
install_offline() {
  local dir=$1
  [[ -f "$dir/mmcv-$(pin mmcv).tar.gz" ]] \
    || die "$dir is not a wheelhouse (no mmcv-$(pin mmcv).tar.gz): make one with bash tools/setup_env.sh --download $dir on a machine with internet"
  check_lock
  PYTHON="${PYTHON:-python3}"
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH; set PYTHON=/path/to/the/python/with/torch"
  "$PYTHON" -c 'import torch, torchvision' 2>/dev/null \
    || die "--offline reuses this machine's torch and torchvision, but $PYTHON cannot import them; set PYTHON=/path/to/the/python that has them (e.g. the cluster's module or conda python)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV on $PYTHON (its site-packages visible: its torch is used)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    # PYTHON is itself a venv (or conda env): its packages are not the new venv's "system" ones
    local site purelib
    site="$("$PYTHON" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
    purelib="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$site" >"$purelib/mmtlalign-system-torch.pth"
    "$VENV/bin/python" -c 'import torch' || die "torch from $site does not import in $VENV"
  fi
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$dir"  # every pip command below: the wheelhouse only
  PIP_QUIET=(-q --progress-bar off)
  MMCV_SDIST="$dir/mmcv-$(pin mmcv).tar.gz"
  say "step 1/4: build tools and numpy from $dir (no network, hash-checked); torch: $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "from", torch.__file__)')"
  install_locked pip wheel packaging ninja setuptools numpy opencv-python
  local facts
  facts="$(probe_torch "$VENV/bin/python")" || die "torch does not import in $VENV"
  read -r TORCH_V CUDA_V PY_V HAS_GPU ARCH_FLAGS TORCH_CUDA_HOME <<<"$facts"
  cuda_plan "$TORCH_V" "$CUDA_V" "$PY_V" "$HAS_GPU" "$ARCH_FLAGS" "$TORCH_CUDA_HOME"
  install_stack
}

main() {
  case "${1:-}" in
    --print-plan) plan_only; return ;;
    --download|--offline)
      [[ -n "${2:-}" ]] || die "$1 needs a folder: bash tools/setup_env.sh $1 DIR"
      if [[ "$1" == --download ]]; then download_wheelhouse "$2"; else install_offline "$2"; fi
      return ;;
    '') ;;
    --lock) make_lock; return ;;
    *) die "unknown argument '$1'; usage: bash tools/setup_env.sh [--print-plan | --download DIR | --offline DIR | --lock]" ;;
  esac
  check_lock

  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(wanted_stamp)" ]]; then
    if out=$(verify_env 2>&1); then
      say "environment ready: $out"
      return 0
    fi
    say "environment at $VENV is stamped but broken; repairing:"
    printf '%s\n' "$out" | tail -n 3
  fi

  PYTHON="${PYTHON:-python3}"
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH; set PYTHON=/path/to/python3.11"
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' \
    || die "Python >= 3.11 is needed (the pinned scikit-image 0.26, and the lock is resolved for it); set PYTHON=/path/to/python3.11"

  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  PIP_QUIET=(-q --progress-bar off)

  local index torch_from=()
  index="$(torch_index_url)"
  [[ -n "$index" ]] && torch_from=(--index-url "$index")
  say "step 1/4: build tools, numpy, torch $(pin torch) + torchvision $(pin torchvision) (a matching pair, ~5 GB on first install)${index:+ from $index}"
  install_locked pip wheel packaging ninja setuptools numpy opencv-python
  "${PIP[@]}" install "${PIP_QUIET[@]}" "${torch_from[@]}" "$(torch_spec torch)" "$(torch_spec torchvision)"

  local facts
  facts="$(probe_torch "$VENV/bin/python")" || die "torch does not import in $VENV (see: $VENV/bin/python -c 'import torch')"
  read -r TORCH_V CUDA_V PY_V HAS_GPU ARCH_FLAGS TORCH_CUDA_HOME <<<"$facts"
  cuda_plan "$TORCH_V" "$CUDA_V" "$PY_V" "$HAS_GPU" "$ARCH_FLAGS" "$TORCH_CUDA_HOME"
  install_stack
}

# install_stack: steps 2-4 (build or reuse mmcv, install the stack, verify, stamp), with PIP
# (online, or --no-index from a wheelhouse) and the torch facts already probed.
install_stack() {
  MMCV_V="$(pin mmcv)"

  if ! compgen -G "$WHEEL_DIR/mmcv-*.whl" >/dev/null; then
    jobs="${MAX_JOBS:-$(nproc)}"
    log="$CACHE/logs/$KEY.log"
    rm -rf "$WHEEL_DIR.partial"
    mkdir -p "$WHEEL_DIR.partial" "$(dirname "$log")"
    say "step 2/4: compiling mmcv $MMCV_V with ops ($OPS) against torch $TORCH_V, MAX_JOBS=$jobs."
    [[ "$FORCE_CUDA" == 1 ]] && say "          CUDA_HOME=$CUDA_HOME (CUDA $NVCC_CUDA_V), TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
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

  say "step 3/4: mmcv, then mmengine, mmpretrain, mmdet, mmsegmentation and test tools: the lock, hash-checked"
  "${PIP[@]}" install "${PIP_QUIET[@]}" --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  write_mmcv_record
  # exact versions for all: nothing upgrades numpy behind our back; torch and mmcv are
  # installed already, so pip keeps them (they are not in the lock)
  install_locked
  "${PIP[@]}" install "${PIP_QUIET[@]}" --no-deps --no-build-isolation -e "$ROOT"

  say "step 4/4: verifying imports and compiled ops"
  out=$(verify_env) || die "verification failed (see the traceback above)"
  say "environment ready: $out"
  wanted_stamp >"$STAMP"
}

# Sourced (by the tests) it only defines the functions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
