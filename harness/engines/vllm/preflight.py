"""What the vLLM engine needs before anything starts (one line, exit 2, nothing written):
``engine.python`` runs and has a ``vllm`` package, found without importing it (an import of vLLM
takes seconds and may touch devices)."""

from __future__ import annotations

import subprocess

from harness.errors import UsageError

PROBE = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"


def preflight(spec, options=None) -> None:
    """``options``: the launch options (unused: a server has no torchrun world)."""
    python = spec.engine.python
    try:
        rc = subprocess.run([python, "-c", PROBE], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(
            f"engine.python: {python} does not run ({type(err).__name__}); give the python "
            f"of a venv with vllm (./setup.sh --vllm makes .venv-vllm)"
        ) from None
    if rc != 0:
        raise UsageError(
            f"engine.python: {python} has no vllm package; run ./setup.sh --vllm or point "
            f"engine.python at a python with vllm installed"
        )
