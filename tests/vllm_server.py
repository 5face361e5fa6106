"""Shared by the vLLM test modules: the vLLM interpreter, a tiny checkpoint, spec files, and a check
that nothing of a server is left.

The vLLM interpreter is ``.venv-vllm/bin/python`` (``./setup.sh --vllm``); without it the
real-server tests skip and say so (CI's ``./setup.sh --test`` installs it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

if (
    os.environ.get("HARNESS_REQUIRE_VLLM") == "1" and not VLLM_PYTHON.exists()
):  # CI: never skip them
    raise RuntimeError(
        f"HARNESS_REQUIRE_VLLM=1 but {VLLM_PYTHON} is missing; ./setup.sh --vllm makes it"
    )
needs_vllm = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason="no .venv-vllm/bin/python: run ./setup.sh --vllm for the vLLM tests",
)


TINY_CONFIG = {  # benchmarks/tiny_checkpoint.py's shape, 2 KV heads (GQA)
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "intermediate_size": 512,
    "vocab_size": 512,
    "max_position_embeddings": 512,
}


def tiny_config_folder(folder: Path) -> Path:
    """A model folder with only the tiny model's config.json (no weights, no tokenizer): what a
    fresh clone can plan and launch with dummy weights."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder


def tiny_checkpoint(folder: Path, **shape) -> Path:
    """benchmarks/tiny_checkpoint.py's checkpoint (4 layers, hidden 256, head_dim 64, word-level
    tokenizer)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(folder, **shape)


def spec_dict(ckpt: Path, engine: dict, tp: int = 2, pp: int = 4, **workload) -> dict:
    """The tiny checkpoint served TP×PP on CPU, with ``engine`` and a small workload."""
    wl = {
        "arrival": "poisson",
        "rate_rps": 4,
        "num_requests": 16,
        "input_len": {"dist": "uniform", "min": 8, "max": 40},
        "output_len": {"value": 16},
        "seed": 0,
    }
    wl.update(workload)
    return {
        "name": "vllm-test",
        "model": {"checkpoint": str(ckpt), "dtype": "fp32"},
        "cluster": {"gpu": "cpu", "nodes": 1, "gpus_per_node": tp * pp},
        "parallel": {"tp": tp, "pp": pp, "dp": 1},
        "workload": wl,
        "slo": {"targets": ["ttft_p99_ms <= 5000", "tpot_p99_ms <= 2000", "throughput_rps >= 0.5"]},
        "run": {
            "max_batch": 8,
            "max_seq_len": 96,
            "warmup_requests": 1,
            "timeout_s": 240,
            "comm_timeout_s": 60,
        },
        "engine": engine,
    }


def write_spec(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def wait_for(pred, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


def shared_server(ckpt: Path, tmp: Path):
    """The session's vLLM server (TP2-PP4 on ``ckpt``), started with the engine's own launch code;
    yields {url, model, info, tree}; at the end stopped and checked gone, leftovers too. Its spec
    has run.instrument timing, so it is launched with vLLM's profiler configured (traces into
    ``tmp/vllm-trace``; idle until a run's profiled window: tests/test_vllm_trace_live.py)."""
    import asyncio

    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record
    from harness.engines.vllm.tree import leftover_names, session_members
    from harness.spec.spec import load_spec

    if not VLLM_PYTHON.exists():
        pytest.skip("no .venv-vllm/bin/python: run ./setup.sh --vllm for the vLLM tests")
    config = write_spec(
        tmp / "vllm.yaml", spec_dict(ckpt, {"kind": "vllm"})
    )  # no env: the harness chooses
    spec = load_spec(config)
    before = leftover_names()
    srv = launch_server(spec, tmp)

    async def up():
        return await bring_up(spec, srv, asyncio.Event())

    try:
        info = asyncio.run(up())
    except BaseException:
        stop_and_record(srv, tmp)
        raise
    print(f"\nvLLM TP2-PP4 server ready after {info.ready_s:.0f} s", file=sys.stderr)
    yield {"url": srv.launch.url, "model": srv.launch.model, "info": info, "tree": srv}
    stopped = stop_and_record(srv, tmp)
    assert stopped["left"] == [] and session_members(srv.pid) == []
    assert stopped["removed"], (
        "a TP2-PP4 server leaves shared memory and sockets; they were not removed"
    )
    assert leftover_names() - before == set()
