#!/usr/bin/env bash
# launch/gpu_check.sh OUTDIR — one call on a GPU machine, well inside 8 minutes:
#   deps (imports everything the check needs, names what is missing) ->
#   versions (GPU, driver, CUDA, torch, NCCL) -> copy bandwidth and bf16 matmul peak ->
#   pytest -m gpu (bf16 vs fp32 reference, CUDA graph decode, NVML) -> emulation of the first,
#   a middle and the last rank of configs/llama3-70b-tp2-pp4-h100.yaml -> one real `harness run` of
#   configs/llama3-8b-1gpu.yaml into OUTDIR/run-1gpu (if time is left) -> OUTDIR/gpu_check.json,
#   OUTDIR/gpu_check.md, OUTDIR/gpu_check.log, and a short table printed last.
# Without a GPU it says so, runs the CPU-side checks (versions, emulation of the tiny spec),
# writes the same files with the GPU fields "not measured" and exits 0.
# Installs nothing; runs the machine's own python (PYTHON, else python3, else .venv/bin/python)
# from the repo root with PYTHONPATH=. Each step has its own timeout; a step that fails or
# times out is recorded and the check goes on; a step whose modules are missing (deps step) is
# skipped, naming them, and the others run. Exit: 0 every step ok (or skipped), 1 some step failed.
set -u
OUT=${1:?usage: launch/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif python3 -c 'import torch' >/dev/null 2>&1 || [ ! -x .venv/bin/python ]; then PY=python3
else PY=.venv/bin/python; fi
BUDGET=${GPU_CHECK_BUDGET_S:-400}     # seconds for the steps; the summary has 45 more (ceiling 480)
CFG=configs/llama3-70b-tp2-pp4-h100.yaml
mkdir -p "$OUT" || exit 1
WORK=$(mktemp -d) || exit 1
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

# step NAME TIMEOUT_S CMD...: log in $WORK/NAME.log, "name rc seconds timeout" in $WORK/steps.tsv
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if (( left < 15 )); then
    printf '%s\tskipped\t\t%s\n' "$name" "$limit" >> "$WORK/steps.tsv"
    echo "== $name: skipped (time budget spent)" > "$WORK/$name.log"; return
  fi
  (( limit > left )) && limit=$left
  echo "== $name (timeout ${limit}s)"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")" "$limit" >> "$WORK/steps.tsv"
  tail -n 12 "$WORK/$name.log"
  (( rc == 0 )) || echo "== $name FAILED (exit $rc; 124 = timeout): recorded, going on"
}
skip() {  # skip NAME WHY
  printf '%s\tskipped\t\t\n' "$1" >> "$WORK/steps.tsv"; echo "== $1: skipped ($2)" > "$WORK/$1.log"
}

# gated NAME MOD... -- TIMEOUT CMD...: the step, or "skipped (missing: ...)" when the deps step
# found a module it needs missing
gated() {
  local name=$1; shift
  local mods=()
  while [ "$1" != "--" ]; do mods+=("$1"); shift; done
  shift
  local why
  if why=$("$PY" launch/gpu_deps.py needs "$WORK/deps.json" "${mods[@]}"); then step "$name" "$@"
  else skip "$name" "$why"; echo "== $name: skipped ($why)"; fi
}

has_gpu() {  # from the versions step; if that failed, ask torch directly
  if [ -f "$WORK/versions.json" ]; then grep -q '"cuda_available": true' "$WORK/versions.json"
  else timeout 60 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; fi
}

step deps 60 "$PY" launch/gpu_deps.py deps "$WORK/deps.json"
gated versions torch -- 60 "$PY" launch/gpu_check.py versions "$WORK/versions.json"
if has_gpu; then
  gated peaks torch -- 60 "$PY" launch/gpu_check.py peaks "$WORK/peaks.json"
  # pytest-timeout is optional: without it the step's own timeout is the only limit
  PYTEST_TIMEOUT=()
  "$PY" launch/gpu_deps.py needs "$WORK/deps.json" pytest_timeout >/dev/null && PYTEST_TIMEOUT=(--timeout 120)
  gated pytest-gpu pytest torch transformers -- 150 "$PY" -m pytest -m gpu tests/test_gpu.py -q \
    -p no:cacheprovider -o addopts= "${PYTEST_TIMEOUT[@]}" --junitxml "$WORK/pytest.xml"
  for kind in first middle last; do
    stage=$(case $kind in first) echo 0;; middle) echo 1;; last) echo 3;; esac)
    gated "emulate-$kind" torch yaml numpy -- 110 "$PY" -m harness.cli emulate "$CFG" --stage "$stage" \
      --iters 10 --budget-s 70 --out "$WORK/emulate-$kind.json"
  done
  # One real end-to-end run on this GPU (harness run: CUDA model, KV cache, event timing, NVML).
  gated run-1gpu torch yaml numpy pyarrow pandas -- 150 "$PY" -m harness.cli run configs/llama3-8b-1gpu.yaml \
    --results-dir "$OUT/run-1gpu"
else
  echo "== no GPU present (torch sees no CUDA device, or the versions step failed): GPU steps not run," \
    "GPU fields 'not measured'"
  for s in peaks pytest-gpu emulate-first emulate-middle emulate-last run-1gpu; do skip "$s" "no GPU"; done
  gated emulate-tiny torch yaml numpy -- 90 "$PY" -m harness.cli emulate configs/tiny-tp2-pp4-cpu.yaml \
    --set run.device=cpu --batches 1,4 --contexts 32 --prefill 32 --iters 2 --out "$WORK/emulate-tiny.json"
fi
# The summary prints the short table last.
timeout -k 5 45 "$PY" launch/gpu_check.py summarize "$WORK" "$OUT"
rc=$?
echo "gpu_check: $(( $(date +%s) - START )) s; results in $OUT/gpu_check.json and $OUT/gpu_check.md"
exit $rc
