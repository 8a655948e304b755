#!/usr/bin/env bash
# Everything only a GPU can show, in one command on a GPU machine (about 10 minutes on one GPU
# with 16 cores, the mmcv CUDA build for that GPU's architecture included), and one report:
#
#   bash tools/gpu_check.sh [--out DIR] [--offline WHEELHOUSE] [--dry-run]
#
#   1. set-up: tools/setup_env.sh (or --offline WHEELHOUSE, for a machine without internet),
#      mmcv's CUDA ops built for this GPU only (TORCH_CUDA_ARCH_LIST = its compute capability
#      unless set; FORCE_CUDA=1);
#   2. the CUDA facts: torch sees the GPU, mmcv's ops were compiled with CUDA;
#   3. the gpu test tier: pytest -m gpu (tests/test_gpu.py);
#   4. tools/analysis/benchmark_alignment.py --device cuda --amp, DeiT-S and Swin-T;
#   5. a 1-GPU tools/dist_train.sh run of a tiny TL-Align DeiT (NCCL).
#
# Writes DIR/report.json and DIR/report.md (each step: command, exit status, seconds, output
# tail) and DIR/<step>.log; default DIR: work_dirs/gpu_check/<date>. Without a GPU it stops
# at once with the reason; --dry-run prints the steps and runs none (works anywhere).
# Environment: STEP_TIMEOUT (seconds per step, default 900), GPU_CHECK_BATCH_DEIT (128),
# GPU_CHECK_BATCH_SWIN (64), and setup_env.sh's own (TORCH_CUDA, CUDA_HOME, ...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="" WHEELHOUSE="" DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --offline) WHEELHOUSE=${2:?--offline needs the wheelhouse folder of setup_env.sh --download}; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "error: unknown argument '$1'; usage: bash tools/gpu_check.sh [--out DIR] [--offline WHEELHOUSE] [--dry-run]" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$ROOT/work_dirs/gpu_check/$(date +%Y%m%d_%H%M%S)}"
PY="${MMTLALIGN_VENV:-$ROOT/.venv}/bin/python"
TIMEOUT="${STEP_TIMEOUT:-900}"

if [[ $DRY == 0 ]]; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "error: no NVIDIA GPU here (nvidia-smi lists none): run tools/gpu_check.sh on a GPU machine (--dry-run prints its steps)." >&2
    exit 2
  fi
  CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sed -n 1p | tr -d ' ')"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$CAP}" FORCE_CUDA="${FORCE_CUDA:-1}"
  mkdir -p "$OUT"
  : >"$OUT/steps.jsonl"
fi

# step NAME CMD...: run CMD (bash -c), log to OUT/NAME.log, record it; later steps still run.
step() {
  local name=$1 cmd=$2 start rc
  if [[ $DRY == 1 ]]; then printf '%-14s %s\n' "$name" "$cmd"; return 0; fi
  echo "[gpu_check] $name: $cmd"
  start=$SECONDS
  set +e
  (cd "$ROOT" && timeout "$TIMEOUT" bash -c "$cmd") >"$OUT/$name.log" 2>&1
  rc=$?
  set -e
  echo "[gpu_check] $name: exit $rc in $((SECONDS - start)) s (log: $OUT/$name.log)"
  "$PY" - "$OUT" "$name" "$cmd" "$rc" "$((SECONDS - start))" <<'PY' 2>/dev/null || \
    printf '{"name": "%s", "rc": %s}\n' "$name" "$rc" >>"$OUT/steps.jsonl"
import json, sys
out, name, cmd, rc, secs = sys.argv[1:]
with open(f'{out}/{name}.log', errors='replace') as f:
    tail = f.read()[-4000:]
with open(f'{out}/steps.jsonl', 'a') as f:
    f.write(json.dumps(dict(name=name, command=cmd, rc=int(rc), seconds=int(secs), tail=tail)) + '\n')
PY
}

if [[ -n "$WHEELHOUSE" ]]; then
  step setup "bash tools/setup_env.sh --offline $(printf '%q' "$WHEELHOUSE")"
else
  step setup "bash tools/setup_env.sh"
fi
step cuda "$PY -c 'import torch, mmcv.ops as o; assert torch.cuda.is_available(), \"torch sees no GPU\"; v = o.get_compiling_cuda_version(); assert v != \"not available\", \"mmcv ops without CUDA\"; print(torch.__version__, torch.cuda.get_device_name(0), \"mmcv ops CUDA\", v)'"
step gpu_tests "OMP_NUM_THREADS=4 $PY -m pytest -q -m gpu tests/test_gpu.py"
step bench_deit_s "$PY tools/analysis/benchmark_alignment.py --model deit-s --device cuda --amp --batch ${GPU_CHECK_BATCH_DEIT:-128} --reps 10"
step bench_swin_t "$PY tools/analysis/benchmark_alignment.py --model swin-t --device cuda --amp --batch ${GPU_CHECK_BATCH_SWIN:-64} --reps 10"
step dist_train_1gpu "$PY - <<'EOF'
import os, subprocess, sys
sys.path.insert(0, 'tests')
import datagen
work = os.path.join('$OUT', 'dist_train')
data = datagen.make_imagenet(os.path.join(work, 'data'), per_class=8, size=64)
cfg = os.path.join(work, 'tiny.py')
open(cfg, 'w').write(datagen.tiny_deit_config(os.path.abspath('configs/tlalign/deit-s_8xb128.py'), num_classes=4))
r = subprocess.run(['bash', 'tools/dist_train.sh', cfg, '1', '--work-dir', work, '--amp', '--cfg-options',
                    *datagen.tiny_cls_options(data, img_size=64)], env=dict(os.environ, PORT='29533'))
log = open(max((os.path.join(dp, f) for dp, _, fs in os.walk(work) for f in fs if f.endswith('.log')),
               key=os.path.getmtime)).read()
assert r.returncode == 0, 'dist_train.sh failed'
assert \"backend='nccl'\" in log or 'nccl' in log.lower(), 'not an NCCL run'
print('1-GPU dist_train.sh: ok (NCCL, --amp)')
EOF"

[[ $DRY == 1 ]] && exit 0
"$PY" - "$OUT" <<'PY'
import json, platform, subprocess, sys, time
out = sys.argv[1]
steps = [json.loads(line) for line in open(f'{out}/steps.jsonl')]
gpu = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,compute_cap',
                      '--format=csv,noheader'], capture_output=True, text=True).stdout.strip()
report = dict(created=time.strftime('%Y-%m-%d %H:%M:%S'), host=platform.node(), gpu=gpu,
              passed=all(s['rc'] == 0 for s in steps), seconds=sum(s.get('seconds', 0) for s in steps),
              steps=steps)
json.dump(report, open(f'{out}/report.json', 'w'), indent=2)
lines = [f'# GPU check {report["created"]} on {report["host"]}', '', f'GPU: {gpu}', '',
         f'Result: **{"all steps passed" if report["passed"] else "FAILED"}** in {report["seconds"]} s', '',
         '| step | exit | seconds |', '|---|---|---|']
lines += [f'| {s["name"]} | {s["rc"]} | {s.get("seconds", "?")} |' for s in steps]
for s in steps:
    lines += ['', f'## {s["name"]}', '', f'`{s.get("command", "")[:300]}`', '', '```',
              s.get('tail', '')[-2500:].rstrip(), '```']
open(f'{out}/report.md', 'w').write('\n'.join(lines) + '\n')
print(f'[gpu_check] report: {out}/report.md, {out}/report.json '
      f'({"passed" if report["passed"] else "FAILED"})')
sys.exit(0 if report['passed'] else 1)
PY
