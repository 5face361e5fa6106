"""MLPerf LoadGen's logs read back (pure): ``mlperf_log_detail.txt`` (its verdict and numbers), with
``mlperf_log_trace.json`` (each sample's times) and ``mlperf_log_accuracy.json`` (each sample's
``n_tokens``) where they are beside it. Checked against LoadGen 6.0.17's source (mlcommons/inference
``loadgen/``: results.cc, logging.cc, loadgen.cc).

LoadGen's definitions, per sample, all from the query's SCHEDULED time (ns, integers):
latency = completion − scheduled; first-token latency = FirstTokenComplete − scheduled;
TPOT = (latency − first-token latency) // (n_tokens − 1). Those are ours from the arrival
(TTFT, E2E, TPOT), so the records carry LoadGen's times exactly: arrival = scheduled,
sent = scheduled + issue_start_ns, first token = scheduled + issue_delay + issue_to_done (the
``Token_Latency`` counter at the same timestamp in Server; the ``Token`` event in Offline),
finish = scheduled + complete_ns. What differs is the statistics: LoadGen's percentile is the
sorted sample at ⌊N·p⌋ (no interpolation; ``lower_rank_percentile``), its mean an integer ns
division; its Server rates are (N − 1) / (done time of the LAST ISSUED query − start), Offline's
N / the largest latency; its token rate counts LoadGen's n_tokens over the same spans.

Without the trace there are no per-sample times: the run keeps LoadGen's own numbers only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.measure.metrics import RequestRecord
from harness.measure.percentiles import lower_rank_percentile
from harness.results.imports.base import Comparison, Imported, bad, lengths

TOOL = "loadgen"
DETAIL = "mlperf_log_detail.txt"
TRACE = "mlperf_log_trace.json"
ACCURACY = "mlperf_log_accuracy.json"
_VERDICT_KEYS = (
    "result_validity",
    "result_perf_constraints_met",
    "result_min_duration_met",
    "result_min_queries_met",
    "early_stopping_met",
    "result_invalid_reason",
    "early_stopping_ttft_result",
    "early_stopping_tpot_result",
)
_PCTS = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
_OURS = {"50.00": "p50", "90.00": "p90", "95.00": "p95", "99.00": "p99"}


def detect(path: Path) -> bool:
    p = path / DETAIL if path.is_dir() else path
    if p.name != DETAIL and not p.name.endswith("_detail.txt"):
        return False
    try:
        with p.open(encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(":::MLLOG")
    except OSError:
        return False


def read_detail(path: Path) -> dict[str, Any]:
    """key → value of every ``:::MLLOG`` line (a later line of the same key wins)."""
    out: dict[str, Any] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise bad(path, TOOL, f"unreadable ({e.__class__.__name__})") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.startswith(":::MLLOG "):
            continue
        try:
            row = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            raise bad(
                path, TOOL, f"line {i} is not a LoadGen log line; a truncated file?"
            ) from None
        if isinstance(row, dict) and "key" in row:
            out[str(row["key"])] = row.get("value")
    if not out:
        raise bad(path, TOOL, "no :::MLLOG lines; give the mlperf_log_detail.txt LoadGen wrote")
    if "result_validity" not in out:
        raise bad(
            path,
            TOOL,
            "no result line (result_validity): LoadGen did not finish the test; rerun it",
        )
    return out


_EVENT = re.compile(r'^\{"name":"(Sample|Token|Token_Latency)"')


def read_trace(path: Path) -> tuple[dict[int, dict], dict[str, int], dict[int, dict]]:
    """(Sample begin events by sample_seq, Token_Latency first-token ns by scheduled ts, Token begin
    events by sample_seq). LoadGen's trace is not strict JSON as a whole (its LogDetail events
    double their quotes); its sample events are one JSON object per line, read one by one."""
    samples: dict[int, dict] = {}
    first: dict[str, int] = {}
    tokens: dict[int, dict] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            m = _EVENT.match(line)
            if not m:
                continue
            try:
                ev = json.loads(line.rstrip().rstrip(","))
            except json.JSONDecodeError:
                raise bad(path, TOOL, f"trace line {i} is not JSON; a truncated trace?") from None
            if m.group(1) == "Token_Latency":
                a = ev.get("args", {})
                first[_ts(ev)] = int(a["issue_delay"]) + int(a["issue_to_done"])
            elif ev.get("ph") == "b":
                (samples if m.group(1) == "Sample" else tokens)[int(ev["id"])] = ev
    return samples, first, tokens


def _ts(ev: dict) -> str:
    # The scheduled time (µs, 3 decimals = ns) identifies a Server query; keep LoadGen's digits.
    return f"{float(ev['ts']):.3f}"


def read_token_counts(path: Path) -> dict[int, int]:
    """sample_seq → n_tokens from the accuracy log (every sample: accuracy_log_probability 1)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise bad(path, TOOL, f"not LoadGen's accuracy log ({e.__class__.__name__})") from None
    return {int(r["seq_id"]): int(r["token_count"]) for r in rows if "token_count" in r}


def _records(
    samples: dict[int, dict], first: dict[str, int], tokens: dict[int, dict], n_tok: dict[int, int]
) -> list[RequestRecord]:
    t0 = min(float(ev["ts"]) for ev in samples.values()) * 1e-6
    out = []
    for seq in sorted(samples):
        ev = samples[seq]
        a = ev["args"]
        sched = float(ev["ts"]) * 1e-6 - t0
        ft_ns = first.get(_ts(ev))
        if ft_ns is None and seq in tokens:
            ft_ns = int(tokens[seq]["args"]["complete_ns"])
        n = n_tok.get(seq)
        out.append(
            RequestRecord(
                request_id=seq,  # sample_seq: unique even when LoadGen reissues a sample
                replica=0,
                arrival_s=sched,
                admitted_s=None,
                first_token_s=None if ft_ns is None else sched + ft_ns * 1e-9,
                finish_s=sched + int(a["complete_ns"]) * 1e-9,
                input_len=0,
                output_len=n or 0,
                completed=True,
                sent_s=sched + int(a["issue_start_ns"]) * 1e-9,
                output_tokens=n,
            )
        )
    return out


def _tpot_ns(r: RequestRecord) -> float | None:
    """LoadGen's TPOT of one sample: (latency − first-token latency) // (n_tokens − 1), in ns."""
    if r.output_tokens is None or r.output_tokens < 2 or r.first_token_s is None:
        return None
    lat = round((r.finish_s - r.arrival_s) * 1e9)
    ft = round((r.first_token_s - r.arrival_s) * 1e9)
    return float((lat - ft) // (r.output_tokens - 1))


def _comparisons(d: dict[str, Any], recs: list[RequestRecord], server: bool) -> list[Comparison]:
    ns = lambda v: None if v is None else float(v) * 1e-6  # noqa: E731 (ns → ms)
    lat = [round((r.finish_s - r.arrival_s) * 1e9) for r in recs]
    ttft = [round((r.first_token_s - r.arrival_s) * 1e9) for r in recs if r.first_token_s]
    tpot = [v for v in map(_tpot_ns, recs) if v is not None]
    out: list[Comparison] = []
    rank = "LoadGen's percentile: the sorted sample at ⌊N·p⌋, no interpolation (ours: numpy's)"

    def family(values: list, ours: str, prefix: str, suffix: str, tool_mean: str) -> None:
        if not values and recs:
            return
        out.append(
            Comparison(
                f"mean_{ours}_ms", tool_mean, ns(d.get(tool_mean)), True, theirs_recomputed=None
            )
        )
        for p in _PCTS:
            key = f"{prefix}{p}{suffix}"
            if key not in d:
                continue
            out.append(
                Comparison(
                    f"{_OURS[p]}_{ours}_ms" if p in _OURS else "",
                    key,
                    ns(d[key]),
                    False,
                    rank,
                    ns(lower_rank_percentile(values, float(p))),
                )
            )

    family(lat, "e2el", "result_", "_percentile_latency_ns", "result_mean_latency_ns")
    if server:
        family(
            ttft,
            "ttft",
            "result_first_token_",
            "_percentile_latency_ns",
            "result_first_token_mean_latency_ns",
        )
        family(tpot, "tpot", "result_time_per_output_token_", "_percentile_ns", "")
        if "result_time_to_output_token_mean" in d and (tpot or not recs):
            out.append(
                Comparison(
                    "mean_tpot_ms",
                    "result_time_to_output_token_mean",
                    ns(d["result_time_to_output_token_mean"]),
                    True,
                )
            )
    out = [c for c in out if c.tool_key]
    out += _rates(d, recs, server)
    return out


def _rates(d: dict[str, Any], recs: list[RequestRecord], server: bool) -> list[Comparison]:
    """LoadGen's rates recomputed. Its Server ``start`` is the first query's scheduled time (the
    records' 0; the trace shows the first Sample at the Scheduling event's start)."""
    n = len(recs)
    toks = sum(r.output_tokens or 0 for r in recs)
    out = []
    if not recs:
        keys = (
            ("result_completed_samples_per_sec", "request_throughput"),
            ("result_completed_tokens_per_second", "output_throughput"),
            ("result_samples_per_second", "request_throughput"),
            ("result_tokens_per_second", "output_throughput"),
        )
        return [
            Comparison(ours, k, float(d[k]), False, "LoadGen's rate (no trace to recompute it)")
            for k, ours in keys
            if k in d
        ]
    if server:
        last = max(recs, key=lambda r: r.arrival_s)  # the last issued query
        done, sched = last.finish_s, last.arrival_s
        spans = (
            ("result_completed_samples_per_sec", "request_throughput", (n - 1) / done),
            ("result_scheduled_samples_per_sec", "", (n - 1) / sched if sched > 0 else None),
            ("result_completed_tokens_per_second", "output_throughput", toks / done),
        )
        what = (
            "(N − 1) / (done time of the last issued query − the first one's schedule); ours: "
            "N / (last finish − first arrival)"
        )
    else:
        longest = max(r.finish_s - r.arrival_s for r in recs)
        spans = (
            ("result_samples_per_second", "request_throughput", n / longest),
            ("result_tokens_per_second", "output_throughput", toks / longest),
        )
        what = "N / the largest sample latency; ours: N / (last finish − first arrival)"
    for tool_key, ours, mine in spans:
        if tool_key in d:
            out.append(Comparison(ours, tool_key, float(d[tool_key]), False, what, mine))
    return out


_RULES = (
    (
        "result_perf_constraints_met",
        "performance constraints (its latency limits at the percentile)",
    ),
    ("result_min_duration_met", "minimum duration"),
    ("result_min_queries_met", "minimum query count"),
    ("early_stopping_met", "early stopping (too few queries to bound the percentile)"),
)


def verdict(d: dict[str, Any]) -> dict[str, Any]:
    """LoadGen's own verdict from its detail log: VALID / INVALID and the rules that failed, in
    words (what ``summary.json`` keeps beside ours)."""
    failed = [words for key, words in _RULES if d.get(key) is False]
    return {
        "validity": d.get("result_validity"),
        "failed": failed,
        "recommendation": (d.get("result_invalid_reason") or "").strip() or None,
        "early_stopping": {
            "ttft": (d.get("early_stopping_ttft_result") or "").strip() or None,
            "tpot": (d.get("early_stopping_tpot_result") or "").strip() or None,
        },
    }


def read(path: Path) -> Imported:
    detail = path / DETAIL if path.is_dir() else path
    d = read_detail(detail)
    folder = detail.parent
    scenario = str(d.get("effective_scenario") or d.get("requested_scenario") or "")
    server = scenario == "Server"
    files = [str(detail)]
    v = verdict(d)
    notes = [
        f"LoadGen {scenario} verdict: {v['validity']}"
        + (f" (failed: {'; '.join(v['failed'])})" if v["failed"] else "")
    ]
    records: list[RequestRecord] = []
    if (folder / TRACE).exists():
        samples, first, tokens = read_trace(folder / TRACE)
        n_tok: dict[int, int] = {}
        if (folder / ACCURACY).exists():
            n_tok = read_token_counts(folder / ACCURACY)
            files.append(str(folder / ACCURACY))
        else:
            notes.append("no mlperf_log_accuracy.json: no per-sample n_tokens, so no TPOT")
        files.append(str(folder / TRACE))
        if samples:
            records = _records(samples, first, tokens, n_tok)
    else:
        notes.append(
            "no mlperf_log_trace.json beside the log (LogSettings.enable_trace): LoadGen's own "
            "numbers only, no per-request records"
        )
    comparisons = _comparisons(d, records, server)
    out_lens = [r.output_tokens for r in records if r.output_tokens]
    qps = d.get("effective_target_qps")
    workload: dict[str, Any] = {
        "num_requests": len(records) or int(d.get("result_query_count") or 1),
        "output_len": lengths(out_lens or [1]),
        "input_len": {"dist": "fixed", "value": 1},
    }
    if server and qps:
        workload.update(arrival="poisson", rate_rps=float(qps))
    else:
        workload.update(arrival="closed", concurrency=workload["num_requests"])
    header = {
        "loadgen": {k: d.get(k) for k in _VERDICT_KEYS if k in d},
        "loadgen_verdict": v,
        "scenario": scenario,
        "loadgen_version": d.get("loadgen_version"),
        "ttft_latency_ns": d.get("requested_server_ttft_latency"),
        "tpot_latency_ns": d.get("requested_server_tpot_latency"),
        "min_duration_ms": d.get("effective_min_duration_ms"),
        "target_latency_percentile": d.get("effective_target_latency_percentile"),
    }
    return Imported(
        tool=TOOL,
        files=files,
        records=records,
        errors={},
        duration_s=None,
        latency_origin="arrival",
        workload=workload,
        comparisons=comparisons,
        header=header,
        notes=notes,
        name=f"loadgen-{scenario.lower() or 'test'}",
    )
