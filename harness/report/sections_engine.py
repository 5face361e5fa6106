"""The "System under test" section of a run served by an external engine (vllm, openai): what ran
(kind, version, command line or URL, how long it took to become ready, where the layout comes
from), the client's own lag, the client's latencies beside the server's (its /metrics
histograms), and the client-vs-server cross-checks. A reference-engine run has no such section.
"""

from __future__ import annotations

from harness.report.doc import Section, Table, Text
from harness.report.rows import Ctx, fmt


def engine_section(ctx: Ctx) -> Section | None:
    s = ctx.run.summary
    eng = s.get("engine") if isinstance(s.get("engine"), dict) else None
    if eng is None or eng.get("kind") in (None, "reference"):
        return None
    rows = [
        ["kind", str(eng.get("kind"))],
        ["version", str(eng.get("version") or "—")],
        ["model (as served)", str(eng.get("model") or "—")],
    ]
    if eng.get("source"):  # a run imported from another client's results (harness import-bench)
        rows.append(["measured by", f"{eng['source']} ({eng.get('file') or '—'})"])
    if eng.get("command"):
        rows.append(["command", str(eng["command"])])
    for name, c in (eng.get("env_chosen") or {}).items():  # what the harness set, and why
        rows.append([f"env {name} (chosen)", f"{c.get('value')}: {c.get('why')}"])
    if eng.get("url"):
        rows.append(["url", str(eng["url"])])
    if eng.get("ready_s") is not None:
        rows.append(["launch → ready", f"{fmt(eng['ready_s'])} s (excluded from every metric)"])
    if eng.get("server_log"):
        rows.append(["server log", str(eng["server_log"])])
    if eng.get("layout_source"):
        rows.append(["layout", str(eng["layout_source"])])
    if eng.get("max_num_seqs") is not None:
        rows.append(
            [
                "scheduling limits",
                f"{eng['max_num_seqs']} sequences in flight per engine, "
                f"{fmt(eng.get('max_num_batched_tokens'))} tokens per scheduled batch (the "
                f"reference engine's slots per replica and token budget)",
            ]
        )
    if eng.get("prefix_caching") is not None:
        rows.append(
            ["prefix cache", "on (engine.prefix_caching)" if eng["prefix_caching"] else "off"]
        )
    blocks = [Table(["", ""], rows)]
    lag = s.get("client") if isinstance(s.get("client"), dict) else None
    ch = (lag or {}).get("chunks") or {}
    if ch.get("chunks"):
        blocks.append(
            Text(
                f"Stream chunks: {ch['chunks']}, of which {ch.get('multi_token')} carried several "
                f"tokens ({ch.get('tokens_in_multi')} tokens; the server's API process lagged "
                f"its engine there). ITL counts one gap per chunk, as vllm bench serve does."
            )
        )
    if lag and lag.get("sent") is not None:
        blocks.append(
            Text(
                f"Client lag (sent − scheduled arrival) over {lag.get('sent')} requests: p50 "
                f"{fmt(lag.get('p50_ms'))} ms, p99 {fmt(lag.get('p99_ms'))} ms, max "
                f"{fmt(lag.get('max_ms'))} ms."
                + (f" Warning: {lag['warning']}." if lag.get("warning") else "")
            )
        )
    blocks += _latency_views(s)
    return Section("System under test", blocks)


def _latency_views(s: dict) -> list:
    view = s.get("server_metrics") if isinstance(s.get("server_metrics"), dict) else {}
    m = s.get("metrics") or {}
    if not view.get("available"):
        return [Text("No server-side metrics (the server has no Prometheus /metrics).", "note")]
    rows = []
    for name, key in (
        ("TTFT", "ttft"),
        ("ITL", "itl"),
        ("E2E", "e2el"),
        ("queue (server)", "queue"),
    ):
        srv = view.get(key) or {}
        client = (
            [fmt(m.get(f"{st}_{key}_ms")) for st in ("mean", "p50", "p90", "p99")]
            if key != "queue"
            else ["—"] * 4
        )
        rows.append(
            [name, "client"]
            + client
            + [fmt(m.get("completed")) if key in ("ttft", "e2el") else "—"]
        )
        rows.append(
            [name, "server"]
            + [fmt(srv.get(f"{st}_ms")) for st in ("mean", "p50", "p90", "p99")]
            + [fmt(srv.get("count"))]
        )
    note = (
        "Client: timed by the harness from the scheduled arrival (so the client's lag and the "
        "network count); "
        "server: vLLM's own histograms over the measured window, from its arrival of the request; "
        "its "
        "percentiles are interpolated inside Prometheus buckets (coarse: one that falls in the "
        "first bucket, e.g. a "
        "queue time below 0.3 s, only says it is below that bound; the mean is exact)."
    )
    counts = (
        f"Server counters over the window: {fmt(view.get('prompt_tokens'))} prompt tokens, "
        f"{fmt(view.get('generation_tokens'))} generated, {fmt(view.get('request_success'))} "
        f"finished, "
        f"{fmt(view.get('num_preemptions'))} preemptions; peak running "
        f"{fmt(view.get('max_num_requests_running'))}, "
        f"waiting {fmt(view.get('max_num_requests_waiting'))}, KV cache use "
        f"{fmt(view.get('max_kv_cache_usage_perc'))} (0..1); prefix cache "
        f"{fmt(view.get('prefix_cache_hits'))} of {fmt(view.get('prefix_cache_queries'))} "
        f"queried prompt tokens hit."
    )
    return [
        Table(["latency (ms)", "seen by", "mean", "p50", "p90", "p99", "observations"], rows),
        Text(note, "note"),
        Text(counts),
    ]
