"""vLLM's own torch profiler, driven by the harness (``run.instrument`` timing or counts).

Launch: ``--profiler-config`` (vLLM 0.32, ``vllm/config/profiler.py``) with ``profiler: torch``,
``torch_profiler_dir`` = ``vllm-trace/`` in the folder of the server's log (the run directory, or
a search's folder), ``torch_profiler_record_shapes: true`` (without it no tensor sizes),
``torch_profiler_with_stack: false`` (on by default, and costly) and ``ignore_frontend: true``
(the API server's own profile is not wanted). ``run.instrument: off`` launches without it.

The profiled window: after the warm-up and before the measured window's first request (and
before its baseline /metrics scrape), ``POST /start_profile`` with a prefix unique to the run,
``PROFILE_REQUESTS`` requests shaped like the trace's first ones (their own seeded prompts),
sent at once, then ``POST /stop_profile``, which returns once every worker has written its trace
(it blocks the engine meanwhile: hence a window apart from the measured one). The window's
requests are not records of the run; their number, tokens, wall time and the stop's time are the
summary's ``vllm_trace.window``. The traces (one per worker, ``PREFIX_*.pt.trace.json.gz``) are
then moved from the server's folder into the run directory's ``vllm-trace/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

from harness.measure.metrics import RequestRecord
from harness.measure.vllm_trace_read import trace_files
from harness.spec.workload import Request, random_prompt

TRACE_DIR = "vllm-trace"
PROFILE_REQUESTS = 4
PROFILE_ID_BASE = 2_000_000_000  # prompts of the profiled window: no trace or warm-up id
COLLECT_WAIT_S = 30.0


def traced(spec) -> bool:
    return spec.run.instrument != "off"


def profiler_config(folder: str | Path) -> dict:
    return {
        "profiler": "torch",
        "torch_profiler_dir": str(Path(folder).resolve()),
        "torch_profiler_record_shapes": True,
        "torch_profiler_with_stack": False,
        "ignore_frontend": True,
    }


def profiler_args(spec, log_dir: str | Path | None) -> list[str]:
    """The launch flag for ``spec`` (none with ``run.instrument: off`` or no folder)."""
    if not traced(spec) or log_dir is None:
        return []
    return ["--profiler-config", json.dumps(profiler_config(Path(log_dir) / TRACE_DIR))]


def window_prefix(run_dir: Path) -> str:
    """A profile_prefix vLLM accepts (1-128 of [A-Za-z0-9._-], alphanumeric first), unique."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(run_dir).name)[:80].lstrip("._-") or "run"
    return f"h{time.time_ns()}-{stem}"


async def _post(session, url: str, body: dict | None = None) -> tuple[int, str]:
    async with session.post(url, json=body) as resp:
        return resp.status, (await resp.text())[:300]


async def profiled_window(
    session, target, trace, clock, prefix: str, n: int = PROFILE_REQUESTS, profile: bool = True
) -> dict:
    """Run the profiled window (``profile`` False: the same requests, no profiler calls) on
    ``session`` against ``target``; the window's record."""
    from harness.engines.openai_server.client import stream_request

    url, model = target.url, target.model
    out: dict = {"prefix": prefix if profile else None, "requests": 0, "error": None}
    t_start = time.monotonic()
    status, text = (
        await _post(session, url + "/start_profile", {"profile_prefix": prefix})
        if profile
        else (200, "")
    )
    if status != 200:
        out["error"] = (
            f"POST /start_profile answered {status} ({text.strip()[:120]}): the server was not "
            "launched with --profiler-config"
        )
        return out
    base = list(trace.requests[:n])
    reqs = [
        Request(PROFILE_ID_BASE + i, 0.0, r.input_len, r.output_len, None)
        for i, r in enumerate(base)
    ]
    recs = [
        RequestRecord(
            r.request_id, 0, 0.0, None, None, input_len=r.input_len, output_len=r.output_len
        )
        for r in reqs
    ]
    t_sent = time.monotonic()
    results = await asyncio.gather(
        *(
            stream_request(
                session,
                url,
                model,
                random_prompt(trace.seed, r.request_id, r.input_len, trace.vocab_size),
                rec,
                clock,
            )
            for r, rec in zip(reqs, recs)
        )
    )
    t_served = time.monotonic()
    status, text = await _post(session, url + "/stop_profile") if profile else (200, "")
    t_stopped = time.monotonic()
    out.update(
        requests=len(reqs),
        prompt_tokens=sum(r.input_len for r in reqs),
        output_tokens=sum(len(res.tokens) for res in results),
        failed=sum(1 for res in results if res.error),
        start_s=t_sent - t_start,
        serve_s=t_served - t_sent,
        stop_s=t_stopped - t_served,
    )
    if status != 200:
        out["error"] = f"POST /stop_profile answered {status} ({text.strip()[:120]})"
    return out


def collect(server_folder: Path, run_dir: Path, prefix: str, workers: int) -> list[Path]:
    """Move the window's traces (and the profiler's tables) from the server's ``vllm-trace/``
    into the run's; waits up to COLLECT_WAIT_S for all ``workers`` traces."""
    src = Path(server_folder) / TRACE_DIR
    dst = Path(run_dir) / TRACE_DIR
    deadline = time.monotonic() + COLLECT_WAIT_S
    while len(trace_files(src, prefix)) < workers and time.monotonic() < deadline:
        time.sleep(0.2)
    if src.resolve() != dst.resolve():
        dst.mkdir(parents=True, exist_ok=True)
        for p in sorted(src.glob(prefix + "_*")):
            shutil.move(str(p), dst / p.name)
    return trace_files(dst, prefix)
