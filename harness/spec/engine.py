"""The spec's ``engine`` section: which system serves the trace, and how to reach or start it.

- ``reference`` (default): our own TP×PP×DP engine on a torchrun world.
- ``vllm``: the harness launches vLLM's CLI, ``vllm serve``, with the spec's layout
  (``harness.engines.vllm``), with ``python`` (an interpreter that has vllm; default
  ``.venv-vllm/bin/python`` of the working folder or of this checkout, when it exists),
  ``extra_args`` appended to its command line, ``env`` added to its environment,
  ``start_timeout_s`` to become ready and ``port`` on 127.0.0.1 (default: a free one);
  ``prefix_caching`` (default false) turns vLLM's prefix cache on (traces with shared prefixes).
- ``openai``: an OpenAI-compatible server someone else started (``url``, ``model``): nothing is
  launched, and the spec's layout fields are recorded as the claim about that server
  (``harness.engines.openai_server``).

``metrics_interval_s``: how often the server's Prometheus ``/metrics`` is scraped (vllm, openai).
The numbers' ranges are in ``harness.spec.bounds.LIMITS``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from harness.errors import UsageError

KINDS = ("reference", "vllm", "openai")
EXTERNAL = ("vllm", "openai")
# vLLM's CPU attention kernels (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes in
# 0.32): another head size passes start-up and fails only at the first request.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
DEFAULT_VENV = Path(".venv-vllm") / "bin" / "python"


@dataclass
class EngineSpec:
    kind: Literal["reference", "vllm", "openai"] = "reference"
    python: str | None = None  # vllm: interpreter with vllm installed
    # vllm: appended to the server's command line
    extra_args: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)  # vllm: added to the server's environment
    start_timeout_s: float = 900.0  # vllm: launch → ready
    port: int | None = None  # vllm: default a free port on 127.0.0.1
    url: str | None = None  # openai: base URL, e.g. http://10.0.0.5:8000
    model: str | None = None  # openai: the served model name
    metrics_interval_s: float = 1.0  # vllm, openai: /metrics scrape period
    # vllm: reuse the KV of prompt prefixes seen before (shared-prefix traces); off by default, so
    # a replayed prompt (a capacity probe, a repeat) is prefilled again
    prefix_caching: bool = False


def default_python(repo_root: Path) -> Path | None:
    """``.venv-vllm/bin/python`` of the working folder, else of this checkout; None when neither
    exists."""
    for base in (Path.cwd(), repo_root):
        cand = base / DEFAULT_VENV
        if cand.exists():
            return cand
    return None


def _only_for(e: EngineSpec, kinds: tuple[str, ...], names: tuple[str, ...]) -> None:
    defaults = EngineSpec()
    for name in names:
        if getattr(e, name) != getattr(defaults, name) and e.kind not in kinds:
            raise UsageError(
                f"engine.{name}: only for engine.kind {' or '.join(kinds)} (this spec says "
                f"kind {e.kind}); drop it or change the kind"
            )


def validate_engine(spec: Any, repo_root: Path, base_dir: Path | None = None) -> None:
    """Check ``spec.engine`` against the rest of the validated spec; every problem one UsageError
    line."""
    e = spec.engine
    _only_for(
        e, ("vllm",), ("python", "extra_args", "env", "start_timeout_s", "port", "prefix_caching")
    )
    _only_for(e, ("openai",), ("url", "model"))
    _only_for(e, EXTERNAL, ("metrics_interval_s",))
    if e.kind == "reference":
        return
    if spec.cluster.nodes != 1:
        raise UsageError(
            f"cluster.nodes: {spec.cluster.nodes} nodes with engine.kind {e.kind}; the harness "
            f"drives one node's server (start a multi-node vLLM yourself and use kind openai "
            f"with cluster.nodes: 1)"
        )
    if e.kind == "openai":
        _validate_openai(e)
    else:
        _validate_vllm(spec, repo_root, base_dir)


def _validate_openai(e: EngineSpec) -> None:
    if not e.url:
        raise UsageError(
            "engine.url: kind openai needs the server's base URL, e.g. http://127.0.0.1:8000"
        )
    u = urlparse(e.url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UsageError(
            f"engine.url: {e.url!r} is not an http(s) URL; write e.g. http://127.0.0.1:8000"
        )
    if not e.model:
        raise UsageError(
            "engine.model: kind openai needs the served model name (GET /v1/models lists it)"
        )


def _validate_vllm(spec: Any, repo_root: Path, base_dir: Path | None) -> None:
    e, m = spec.engine, spec.model
    if e.python is None:
        found = default_python(repo_root)
        if found is None:
            raise UsageError(
                "engine.python: no interpreter given and no .venv-vllm/bin/python here; run "
                "./setup.sh --vllm, or set engine.python to a python that has vllm"
            )
        e.python = os.path.abspath(found)
    else:
        p = Path(e.python).expanduser()
        if (
            not p.is_absolute()
            and base_dir is not None
            and not p.exists()
            and (base_dir / p).exists()
        ):
            p = base_dir / p
        if not p.is_file() or not os.access(p, os.X_OK):
            raise UsageError(
                f"engine.python: {e.python} is not an executable file; give the python of a venv "
                f"with vllm (./setup.sh --vllm makes .venv-vllm)"
            )
        # not resolve(): a venv's python is a symlink that must stay one
        e.python = os.path.abspath(p)
    if m.preset is not None:
        raise UsageError(
            f"model.preset: vLLM loads a Hugging Face folder, not the preset {m.preset!r}; give "
            f"model.checkpoint (weights) or model.config (a folder with config.json: dummy weights)"
        )
    for k, v in e.env.items():
        if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None:
            raise UsageError(f"engine.env.{k}: environment values are text or numbers, got {v!r}")
    e.env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in e.env.items()}
    cpu = spec.cluster.gpu.lower() == "cpu" or spec.run.device == "cpu"
    if cpu and spec.shape.head_dim not in VLLM_CPU_HEAD_SIZES:
        raise UsageError(
            f"model: head_dim {spec.shape.head_dim} is not supported by vLLM's CPU attention "
            f"(head sizes {', '.join(map(str, VLLM_CPU_HEAD_SIZES))}); use a model with one of "
            f"those"
        )
