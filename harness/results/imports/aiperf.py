"""NVIDIA AIPerf's records read back (pure): ``profile_export.jsonl`` (one JSON object per request:
``metadata`` with wall-clock ns, ``metrics`` with per-request values) and, beside it,
``profile_export_aiperf.json`` (its own summary). Checked against AIPerf 0.13.0's source
(``aiperf/metrics/types``).

Per request (times in ns in ``metadata``, ms in ``metrics``): arrival = ``credit_issued_ns`` (when
AIPerf's timing manager released it), sent = ``request_start_ns``, first token = sent +
``time_to_first_token`` (first response − request start), token times = first token + the running
sum of ``inter_chunk_latency`` (the gaps between content chunks, one token each from vLLM),
finish = sent + ``request_latency`` (final content response − request start). Output tokens: the
server's ``usage_completion_tokens`` where it sent one (it wins), else AIPerf's
``output_token_count`` (its own re-tokenization of the text); both are kept.

AIPerf's names against ours: ``time_to_first_token`` = TTFT and ``request_latency`` = E2EL (from the
send, as vLLM); ``inter_token_latency`` = (request_latency − TTFT) / (OSL − 1) is vLLM's TPOT, and
``inter_chunk_latency`` is vLLM's ITL (except that AIPerf keeps a 0 ms gap for each chunk read in
the same network read, where ours counts one gap per arrival time: shown as a difference); its
statistics are numpy's (linear percentiles, population std), its rates over ``benchmark_duration`` =
last response − first request start. Where AIPerf counted tokens itself and the server disagrees,
its per-token numbers (inter_token_latency, output_token_throughput, total_output_tokens) differ
from ours by the count: the report shows both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.measure.metrics import RequestRecord
from harness.measure.percentiles import stats
from harness.results.imports.base import Comparison, Imported, bad, lengths, read_json, read_jsonl

TOOL = "aiperf"
RECORDS = "profile_export.jsonl"
SUMMARY = "profile_export_aiperf.json"
_STATS = {"avg": "mean", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "std": "std"}
_FAMILIES = {  # AIPerf's metric → our family (same definition)
    "time_to_first_token": "ttft",
    "request_latency": "e2el",
    "inter_chunk_latency": "itl",
}


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / RECORDS).is_file()
    if path.name == SUMMARY:
        return (path.parent / RECORDS).is_file()
    if path.suffix != ".jsonl":
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = f.readline(65536)
    except OSError:
        return False
    return head.startswith('{"metadata"') and '"metrics"' in head


def _value(metrics: dict, key: str) -> Any:
    v = metrics.get(key)
    return v.get("value") if isinstance(v, dict) else None


def _record(i: int, row: dict, t0_ns: int, path: Path) -> tuple[RequestRecord, dict]:
    md, m = row.get("metadata") or {}, row.get("metrics") or {}
    try:
        sent_ns = int(md["request_start_ns"])
    except (KeyError, TypeError, ValueError):
        raise bad(path, TOOL, f"record {i + 1} has no metadata.request_start_ns") from None
    issued_ns = int(md.get("credit_issued_ns") or sent_ns)
    sent, arrival = (sent_ns - t0_ns) * 1e-9, (min(issued_ns, sent_ns) - t0_ns) * 1e-9
    ttft, lat = _value(m, "time_to_first_token"), _value(m, "request_latency")
    error = row.get("error")
    done = not error and ttft is not None and lat is not None
    times: list[float] = []
    gaps = [float(g) for g in _value(m, "inter_chunk_latency") or []]
    if ttft is not None:
        t = sent + ttft * 1e-3
        times.append(t)
        for gap in gaps:
            t += gap * 1e-3
            times.append(t)
    server = _value(m, "usage_completion_tokens")
    client = _value(m, "output_token_count")
    n = server if server is not None else client
    rec = RequestRecord(
        request_id=i,
        replica=0,
        arrival_s=arrival,
        admitted_s=None,
        first_token_s=times[0] if times else None,
        token_times_s=times,
        finish_s=sent + lat * 1e-3
        if lat is not None
        else (int(md.get("request_end_ns") or sent_ns) - t0_ns) * 1e-9,
        input_len=int(_value(m, "usage_prompt_tokens") or _value(m, "input_sequence_length") or 0),
        output_len=int(n or 0),
        completed=done,
        sent_s=sent,
        output_tokens=int(n) if done and n is not None else None,
    )
    info = {"server": server, "client": client, "error": error, "gaps": gaps}
    return rec, info


def _client_tpot_ms(recs: list[RequestRecord], infos: list[dict]) -> list[float]:
    """AIPerf's inter_token_latency per request with ITS OSL (the client's count)."""
    out = []
    for r, inf in zip(recs, infos):
        n = inf["client"]
        if r.completed and n is not None and n > 1:
            out.append((r.finish_s - r.first_token_s) * 1e3 / (n - 1))
    return out


def _comparisons(summ: dict, recs: list, infos: list, counts_agree: bool) -> list[Comparison]:
    out: list[Comparison] = []
    gaps = [g for r, inf in zip(recs, infos) if r.completed for g in inf["gaps"]]
    zeros = sum(1 for g in gaps if g == 0)
    chunk_stats = stats(gaps) if gaps else {}
    for tool_metric, fam in _FAMILIES.items():
        block = summ.get(tool_metric) or {}
        for st, ours in _STATS.items():
            if st not in block:
                continue
            if fam == "itl" and zeros:
                # AIPerf stamps every content chunk of one network read with the same time and
                # keeps their 0 ms gaps; ours (vllm bench serve's ITL) is one gap per arrival
                # time, so those chunks count as one: both shown, AIPerf's recomputed from its gaps
                how = (
                    f"AIPerf keeps a 0 ms gap for each chunk read together with the one before "
                    f"({zeros} of {len(gaps)} gaps here); ours counts chunks that arrive together "
                    f"as one"
                )
                out.append(
                    Comparison(
                        f"{ours}_{fam}_ms",
                        f"{tool_metric}.{st}",
                        block[st],
                        False,
                        how,
                        chunk_stats.get(ours),
                    )
                )
                continue
            out.append(Comparison(f"{ours}_{fam}_ms", f"{tool_metric}.{st}", block[st], True))
    itl = summ.get("inter_token_latency") or {}
    client = stats(_client_tpot_ms(recs, infos))
    for st, ours in _STATS.items():
        if st not in itl:
            continue
        if counts_agree:
            out.append(Comparison(f"{ours}_tpot_ms", f"inter_token_latency.{st}", itl[st], True))
        else:
            out.append(
                Comparison(
                    f"{ours}_tpot_ms",
                    f"inter_token_latency.{st}",
                    itl[st],
                    False,
                    "vLLM's TPOT by its formula, but over AIPerf's own token count (the text "
                    "re-tokenized by the client); ours divides by the server's count",
                    client[ours],
                )
            )
    window = _window_s(summ)
    done = [(r, inf) for r, inf in zip(recs, infos) if r.completed]
    for key, ours in (
        ("request_count", "completed"),
        ("total_output_tokens", "total_output_tokens"),
    ):
        v = (summ.get(key) or {}).get("avg")
        if v is None:
            continue
        if key == "total_output_tokens" and not counts_agree:
            client = float(sum(inf["client"] or 0 for _, inf in done))
            out.append(Comparison(ours, key, float(v), False, _CLIENT_COUNT, client))
        else:
            out.append(Comparison(ours, key, float(v), True))
    # AIPerf's rates: over its profiling phase's window (start_time → end_time), not over
    # benchmark_duration (first request start → last response), which ours use
    toks = sum((inf["server"] if counts_agree else inf["client"]) or 0 for _, inf in done)
    rates = {
        "request_throughput": ("request_throughput", len(done)),
        "output_token_throughput": ("output_throughput", toks),
    }
    for key, (ours, count) in rates.items():
        v = (summ.get(key) or {}).get("avg")
        if v is not None:
            how = (
                "count / AIPerf's phase window (start_time → end_time); ours: / benchmark_duration"
            )
            if key != "request_throughput" and not counts_agree:
                how += "; " + _CLIENT_COUNT
            out.append(
                Comparison(ours, key, float(v), False, how, count / window if window else None)
            )
    return out


_CLIENT_COUNT = "AIPerf's own token count (the text re-tokenized by the client); ours: the server's"


def _window_s(summ: dict) -> float | None:
    """AIPerf's profiling window in s, from the summary's ISO times (µs)."""
    import datetime as dt

    try:
        a = dt.datetime.fromisoformat(str(summ["start_time"]))
        b = dt.datetime.fromisoformat(str(summ["end_time"]))
    except (KeyError, ValueError):
        return None
    return (b - a).total_seconds() or None


def read(path: Path) -> Imported:
    folder = path if path.is_dir() else path.parent
    jsonl = path if path.suffix == ".jsonl" else folder / RECORDS
    rows = [r for r in read_jsonl(jsonl, TOOL) if _phase(r) == "profiling"]
    if not rows:
        raise bad(jsonl, TOOL, "no profiling records (only warm-up?)")
    starts = []
    for i, r in enumerate(rows):
        md = r.get("metadata") or {}
        if not isinstance(md.get("request_start_ns"), int):
            raise bad(jsonl, TOOL, f"record {i + 1} has no metadata.request_start_ns")
        starts.append(
            min(int(md.get("credit_issued_ns") or md["request_start_ns"]), md["request_start_ns"])
        )
    t0 = min(starts)
    pairs = [_record(i, r, t0, jsonl) for i, r in enumerate(rows)]
    recs, infos = [p[0] for p in pairs], [p[1] for p in pairs]
    files = [str(jsonl)]
    summ: dict = {}
    if (folder / SUMMARY).is_file():
        summ = read_json(folder / SUMMARY, TOOL)
        files.append(str(folder / SUMMARY))
    done = [(r, inf) for r, inf in zip(recs, infos) if r.completed]
    both = [(inf["server"], inf["client"]) for _, inf in done if inf["server"] is not None]
    token_counts = None
    if both:
        differ = sum(1 for s, c in both if s != c)
        token_counts = {
            "server": sum(s for s, _ in both),
            "client": sum(c or 0 for _, c in both),
            "requests": len(both),
            "differ": differ,
        }
    agree = token_counts is None or token_counts["differ"] == 0
    dur = (summ.get("benchmark_duration") or {}).get("avg")
    notes = []
    if not summ:
        notes.append(f"no {SUMMARY} beside the records: AIPerf's own numbers are not checked")
    if token_counts and not agree:
        notes.append(
            f"AIPerf counted {token_counts['client']} output tokens by re-tokenizing the text, the "
            f"server {token_counts['server']} (usage.completion_tokens, used here) over "
            f"{token_counts['requests']} requests: AIPerf's per-token numbers follow its count"
        )
    if token_counts:
        client_tpot = stats(_client_tpot_ms(recs, infos))
        token_counts["metrics"] = {"mean_tpot_ms": {"client": client_tpot["mean"]}}
    cfg = summ.get("input_config") or {}
    phase = (cfg.get("phases") or [{}])[0]
    models = (cfg.get("models") or {}).get("items") or [{}]
    ins = [r.input_len for r, _ in done] or [1]
    outs = [r.output_tokens for r, _ in done if r.output_tokens] or [1]
    workload: dict[str, Any] = {
        "num_requests": len(recs),
        "input_len": lengths(ins),
        "output_len": lengths(outs),
    }
    if phase.get("rate"):
        workload.update(
            arrival=phase.get("type")
            if phase.get("type") in ("poisson", "constant", "gamma")
            else "poisson",
            rate_rps=float(phase["rate"]),
        )
    else:
        workload.update(arrival="closed", concurrency=int(phase.get("concurrency") or 1))
    header = {
        "aiperf_version": summ.get("aiperf_version"),
        "model_id": models[0].get("name"),
        "tokenizer_id": (cfg.get("tokenizer") or {}).get("name"),
        "endpoint_type": (cfg.get("endpoint") or {}).get("type"),
        "phase": phase,
        "date": summ.get("start_time"),
    }
    return Imported(
        tool=TOOL,
        files=files,
        records=recs,
        errors={r.request_id: str(inf["error"]) for r, inf in zip(recs, infos) if inf["error"]},
        duration_s=float(dur) if dur else None,
        latency_origin="send",
        workload=workload,
        comparisons=_comparisons(summ, recs, infos, agree) if summ else [],
        header=header,
        token_counts=token_counts,
        notes=notes,
        name=f"aiperf-{phase.get('type') or 'run'}",
    )


def _phase(row: dict) -> str:
    return str((row.get("metadata") or {}).get("benchmark_phase") or "profiling")
