"""A drive over an external server → the engine's result: the common request records, the
``server_metrics`` and ``nvml`` tables, the ``engine`` / ``client`` / ``server_metrics`` summary
blocks, notes and the client-vs-server cross-checks (pure).

Cross-checks (when the server has /metrics and the run completed): the server's generation-token
counter increase over the measured window equals the tokens the client received for the measured
requests, and its finished-request counter increase equals the requests the client saw finish; and,
unless the harness turned vLLM's prefix cache on (engine.prefix_caching), no prompt token of the
window was a prefix-cache hit: a capacity probe on a shared server reused nothing of the probes
before it.
"""

from __future__ import annotations

import os
from typing import Any

from harness.engines.base import EngineResult
from harness.engines.openai_server.scrape import server_view
from harness.measure.chunks import chunk_counts
from harness.measure.metrics import client_lag, tokens_out
from harness.measure.nvml import summarize_nvml
from harness.spec.catalog import gpu_label


def _cross_checks(drive, view: dict, reuse_allowed: bool = False) -> list[dict]:
    if not view.get("available") or drive.baseline is None:
        return []
    reuse = []
    if not reuse_allowed and view.get("prefix_cache_hits") is not None:
        reuse = [
            {
                "name": "no prompt token served from the prefix cache",
                "expected": 0,
                "measured": view["prefix_cache_hits"],
                "ok": view["prefix_cache_hits"] == 0,
                "detail": "Δ vllm:prefix_cache_hits_total over the measured window: every prompt "
                "was prefilled, none reused the KV of an earlier run or request",
            }
        ]
    main = [r for r in drive.records if not r.warmup]
    received = sum(tokens_out(r) for r in main if r.finish_s is not None)
    finished = sum(1 for r in main if r.finish_s is not None)
    return [
        {
            "name": "server generation tokens = tokens the client received",
            "expected": received,
            "measured": view.get("generation_tokens"),
            "ok": view.get("generation_tokens") == received,
            "detail": "Δ vllm:generation_tokens_total over the measured window vs Σ tokens of the "
            "measured requests",
        },
        {
            "name": "server finished requests = requests the client saw finish",
            "expected": finished,
            "measured": view.get("request_success"),
            "ok": view.get("request_success") == finished,
            "detail": "Δ vllm:request_success_total (every finished_reason) vs measured requests "
            "with a finish",
        },
        *reuse,
    ]


def external_result(
    spec,
    kind: str,
    drive,
    *,
    info,
    command: str | None,
    sampler,
    complete: bool,
    reason: str | None,
    host: str,
    facts: dict | None = None,
) -> EngineResult:
    """``kind`` vllm (launched here, ``command`` its command line) or openai (someone else's
    server); ``facts``: what the launching engine adds to ``summary.engine`` (the limits and
    environment it chose)."""
    lay = spec.layout
    view = server_view(drive.baseline, drive.final, drive.snapshots)
    lag = client_lag(drive.records, released_s=drive.released)
    if lag is not None:
        lag["scheduling"] = drive.scheduling
    chunks = chunk_counts(drive.records)
    if lag is not None or chunks["chunks"]:
        lag = {**(lag or {}), "chunks": chunks}
    notes: list[str] = []
    if lag and lag.get("warning"):
        notes.append(lag["warning"])
    if chunks["multi_token"]:
        notes.append(
            f"{chunks['multi_token']} of {chunks['chunks']} stream chunks carried several tokens "
            f"({chunks['tokens_in_multi']} tokens): the server's API process lagged its engine; "
            f"ITL counts one gap per chunk, as vllm bench serve does"
        )
    if drive.metrics_note:
        notes.append(drive.metrics_note)
    if drive.errors:
        rid, err = next(iter(sorted(drive.errors.items())))
        notes.append(f"{len(drive.errors)} request(s) failed; request {rid}: {err[:300]}")
    if sampler is not None and sampler.note:
        notes.append(sampler.note)
    launched = kind == "vllm"
    if not launched:
        notes.append(
            f"external server {info.models[0] if info and info.models else spec.engine.model} at "
            f"{spec.engine.url}: the layout tp={lay.tp} pp={lay.pp} dp={lay.dp} is the spec's "
            f"claim about "
            f"it, not verified by the harness"
        )
        notes.append(
            "no GPU telemetry: the GPUs of a server someone else runs are not known here (sampling "
            "the whole node would measure other jobs); hardware.gpu is the spec's claim"
        )
    nvml_rows = sampler.rows() if sampler is not None else []
    gpu = sampler is not None and type(sampler).__name__ == "GpuSampler"
    gpu_name = spec.gpu.name if gpu or not launched else "cpu"
    if gpu and getattr(sampler, "names", None):  # what ran, from the hardware, never the spec
        gpu_name, mismatch = gpu_label(spec.gpu.name, sampler.names)
        if mismatch:
            notes.append(mismatch)
    util = (
        [
            d["mean_gpu_util_pct"]
            for d in summarize_nvml(nvml_rows).values()
            if d.get("mean_gpu_util_pct") is not None
        ]
        if gpu and nvml_rows
        else []
    )
    engine: dict[str, Any] = {
        "kind": kind,
        "version": info.version if info else None,
        "command": command,
        "url": spec.engine.url if not launched else None,
        "model": drive_model(info, spec),
        "server_log": "server.log" if launched else None,
        "ready_s": info.ready_s if info else None,
        "layout_source": "launched by the harness with these flags"
        if launched
        else "claimed by the spec (external server, not verified)",
        **(facts or {}),
    }
    tables = {}
    if drive.metric_rows:
        tables["server_metrics"] = drive.metric_rows
    if nvml_rows:
        tables["nvml"] = nvml_rows
    return EngineResult(
        records=list(drive.records),
        complete=complete,
        incomplete_reason=reason,
        tokens=dict(drive.tokens) if spec.run.record_tokens else None,
        wall_s=drive.wall_s,
        warmup_s=drive.warmup_s,
        hardware={
            "gpu": gpu_name,
            "gpu_name": gpu_name,
            "total_gpus": lay.world_size,
            "nodes": 1,
            "hosts": [host],
            "backend": kind,
        },
        layout={
            "tp": lay.tp,
            "pp": lay.pp,
            "dp": lay.dp,
            "layer_split": list(lay.layer_split),
            "source": engine["layout_source"],
        },
        # an external server's layout is a claim, not a measurement: only a launched one states it
        measured={
            "total_gpus": lay.world_size if launched else None,
            "gpu_utilization_pct": sum(util) / len(util) if util else None,
        },
        extra={
            "engine": engine,
            "client": lag,
            "server_metrics": view,
            "notes": notes,
            "cross_checks": _cross_checks(drive, view, bool((facts or {}).get("prefix_caching")))
            if complete
            else [],
            "stage_stats": [],
            **({"sequential": drive.sequential} if drive.sequential else {}),
        },
        tables=tables,
    )


def drive_model(info, spec) -> str | None:
    if spec.engine.kind == "openai":
        return spec.engine.model
    return info.models[0] if info and info.models else None


def hostname() -> str:
    return os.uname().nodename
