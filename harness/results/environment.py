"""What ran: versions of the harness and its stack, GPUs, hosts and Slurm job (``env.json``).

No torch import at module level; ``environment`` imports it lazily, so the report verbs never pay
for it."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, SCHEMA_VERSION, __version__


def _git_sha(repo_dir: Path) -> str | None:
    git = shutil.which("git")
    if git is None or not (repo_dir / ".git").exists():
        return None
    try:
        out = subprocess.run(
            [git, "-C", str(repo_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return None
    dirty = subprocess.run(
        [git, "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return sha + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _module_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(name)
    except PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: a CPU host
        return None
    try:
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def environment(
    hostnames: list[str] | None = None,
    slurm_job_id: str | None = None,
    backend: str | None = None,
    torch_module: Any = None,
) -> dict:
    """What ran: harness version + git sha, Python/torch/transformers/CUDA/NCCL/driver versions,
    GPU names and count, hostnames (every rank's, when the run gathered them), Slurm job id.

    Never initialises CUDA on a host without it and never needs git. ``torch_module`` lets a
    test pass a stand-in; by default torch is imported here (not at module import).
    """
    repo = REPO_ROOT
    env: dict[str, Any] = {
        "harness_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "git_sha": _git_sha(repo),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "transformers": _module_version("transformers"),
        "hostnames": sorted(set(hostnames)) if hostnames else [socket.gethostname()],
        "slurm_job_id": slurm_job_id
        if slurm_job_id is not None
        else os.environ.get("SLURM_JOB_ID"),
        "backend": backend,
        "torch": None,
        "cuda": None,
        "nccl": None,
        "driver": None,
        "gpu_count": 0,
        "gpu_names": [],
    }
    torch = torch_module
    if torch is None:
        try:
            import torch  # noqa: F811  (lazy: the report verbs never pay for it)
        except ImportError:
            return env
    env["torch"] = getattr(torch, "__version__", None)
    env["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        env["gpu_count"] = n
        env["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(n)]
        try:
            v = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # torch built without NCCL
            env["nccl"] = None
        env["driver"] = _driver_version()
    return env
