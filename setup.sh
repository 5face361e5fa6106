#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a venv in .venv with the CPU torch wheel pinned.
#   ./setup.sh          the package, for `harness run`
#   ./setup.sh --test   plus the test tools and the system packages the tests use (Slurm, Chromium)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Pin the CPU wheel: an unpinned torch may pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0
fi
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q -e '.[test]'
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Not fatal: without them the Slurm and browser tests skip and say why.
    bash .ci/slurm_setup.sh || echo "setup.sh: Slurm packages not installed; the Slurm tests will skip" >&2
    bash .ci/chromium_setup.sh || echo "setup.sh: chromium not installed; the report rendering test will skip" >&2
  fi
else
  .venv/bin/pip install -q -e .
fi
