"""guidellm's ``benchmarks.json`` read back (pure): its first benchmark's requests (successful,
errored, incomplete) and its own metric distributions. Checked against guidellm 0.8.1's source
(``guidellm/schemas/base/request_stats.py``, ``statistics.py``).

Per request (``info.timings``, epoch seconds): arrival = ``targeted_start`` (its schedule), sent =
``request_start``, first token = ``first_token_iteration``, finish = ``last_token_iteration`` (the
last token, as our client ends a request), output tokens = ``output_metrics.text_tokens`` (the
server's usage, guidellm's default), input = ``input_metrics.text_tokens``. guidellm keeps no
per-token times, so there is no ITL distribution.

guidellm's names against ours: ``time_to_first_token_ms`` = TTFT (from the send) and
``inter_token_latency_ms`` = (last − first token) / (n − 1) = vLLM's TPOT: same definitions. Its
``time_per_output_token_ms`` = (last token − send) / n includes the TTFT, and its
``request_latency`` (s) runs to ``request_end`` (after the usage chunk): both differ from ours and
are recomputed from the records by its formula. Its statistics: the mean is ours; a percentile is
the smallest value whose cumulative share reaches p (``inverse_cdf_percentile``), not numpy's
interpolation; its median is its p50.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.measure.metrics import RequestRecord
from harness.measure.percentiles import inverse_cdf_percentile, stats
from harness.results.imports.base import Comparison, Imported, bad, lengths, read_json

TOOL = "guidellm"
_PCTS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
_RANK = "guidellm's percentile: the smallest value whose cumulative share reaches p (ours: numpy's)"


def detect(path: Path) -> bool:
    if not path.is_file() or path.suffix != ".json":
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith("{") and '"benchmarks"' in head and '"metadata"' in head


def _num(t: dict, key: str) -> float | None:
    v = t.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _records(reqs: dict, path: Path) -> tuple[list[RequestRecord], dict[int, str], list[dict]]:
    rows = []
    for status in ("successful", "errored", "incomplete"):
        rows += [(status, r) for r in reqs.get(status) or []]
    if not rows:
        raise bad(path, TOOL, "its benchmark holds no requests")
    timings = [((r.get("info") or {}).get("timings") or {}) for _, r in rows]
    starts = [_num(t, "targeted_start") or _num(t, "request_start") for t in timings]
    if any(s is None for s in starts):
        raise bad(path, TOOL, "a request has no timings.request_start")
    t0 = min(starts)
    recs, errors, extra = [], {}, []
    for i, ((status, r), t, due) in enumerate(zip(rows, timings, starts)):
        rel = lambda v: None if v is None else v - t0  # noqa: E731
        sent = rel(_num(t, "request_start"))
        first, last = rel(_num(t, "first_token_iteration")), rel(_num(t, "last_token_iteration"))
        n = (r.get("output_metrics") or {}).get("text_tokens")
        done = status == "successful" and first is not None and last is not None
        recs.append(
            RequestRecord(
                request_id=i,
                replica=0,
                arrival_s=min(due - t0, sent if sent is not None else due - t0),
                admitted_s=None,
                first_token_s=first,
                finish_s=last if last is not None else rel(_num(t, "request_end")),
                input_len=int((r.get("input_metrics") or {}).get("text_tokens") or 0),
                output_len=int(n or 0),
                completed=done,
                sent_s=sent,
                output_tokens=int(n) if done and n is not None else None,
            )
        )
        extra.append({"end": rel(_num(t, "request_end")), "status": status})
        if status != "successful":
            errors[i] = str((r.get("info") or {}).get("error") or status)
    return recs, errors, extra


def _comparisons(m: dict, recs: list[RequestRecord], extra: list[dict]) -> list[Comparison]:
    done = [(r, e) for r, e in zip(recs, extra) if r.completed]
    ttft = [(r.first_token_s - r.sent_s) * 1e3 for r, _ in done]
    itl = [
        (r.finish_s - r.first_token_s) * 1e3 / (r.output_tokens - 1)
        for r, _ in done
        if r.output_tokens and r.output_tokens > 1
    ]
    tpot = [(r.finish_s - r.sent_s) * 1e3 / r.output_tokens for r, _ in done if r.output_tokens]
    lat = [(e["end"] - r.sent_s) for r, e in done if e["end"] is not None]
    out: list[Comparison] = []

    def family(tool: str, values: list[float], ours: str | None, how: str, scale: float) -> None:
        block = (m.get(tool) or {}).get("successful") or {}
        if not block:
            return
        mean = stats(values)["mean"] if values else None
        if ours is not None:
            out.append(Comparison(f"mean_{ours}_ms", f"{tool}.mean", block.get("mean"), True))
        else:
            out.append(Comparison("", f"{tool}.mean", block.get("mean"), False, how, mean))
        for p, q in _PCTS.items():
            v = (block.get("percentiles") or {}).get(p)
            if v is None:
                continue
            mine = inverse_cdf_percentile(values, q)
            out.append(
                Comparison(
                    f"{p}_{ours}_ms" if ours else "",
                    f"{tool}.{p}",
                    v * scale,
                    False,
                    _RANK if ours else f"{how}; {_RANK}",
                    None if mine is None else mine * scale,
                )
            )

    family("time_to_first_token_ms", ttft, "ttft", "", 1.0)
    family("inter_token_latency_ms", itl, "tpot", "", 1.0)
    family(
        "time_per_output_token_ms",
        tpot,
        None,
        "(last token − send) / n: the TTFT included (vLLM's TPOT excludes it)",
        1.0,
    )
    family("request_latency", lat, None, "request_end − request_start, in s", 1.0)
    tot = (m.get("output_token_count") or {}).get("successful") or {}
    if tot.get("total_sum") is not None:
        out.append(
            Comparison(
                "total_output_tokens", "output_token_count.total_sum", tot["total_sum"], True
            )
        )
    pin = (m.get("prompt_token_count") or {}).get("successful") or {}
    if pin.get("total_sum") is not None:
        out.append(
            Comparison("total_input_tokens", "prompt_token_count.total_sum", pin["total_sum"], True)
        )
    return out


def read(path: Path) -> Imported:
    data = read_json(path, TOOL)
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list) or not benches or not isinstance(benches[0], dict):
        raise bad(path, TOOL, "no benchmarks; give the benchmarks.json guidellm wrote")
    b = benches[0]
    recs, errors, extra = _records(b.get("requests") or {}, path)
    notes = []
    if len(benches) > 1:
        notes.append(f"the file holds {len(benches)} benchmarks (a sweep): the first is imported")
    prof = (
        ((b.get("config") or {}).get("profile") or {}) if isinstance(b.get("config"), dict) else {}
    )
    rate = prof.get("rate")
    rate = rate[0] if isinstance(rate, list) and rate else rate
    done = [r for r in recs if r.completed]
    workload: dict[str, Any] = {
        "num_requests": len(recs),
        "input_len": lengths([r.input_len for r in done] or [1]),
        "output_len": lengths([r.output_tokens for r in done if r.output_tokens] or [1]),
    }
    kind = str(prof.get("kind") or prof.get("type_") or "")
    if isinstance(rate, (int, float)) and rate > 0 and kind in ("poisson", "constant"):
        workload.update(arrival=kind, rate_rps=float(rate))
    else:
        workload.update(arrival="closed", concurrency=len(recs))
    cfg = data.get("config") if isinstance(data.get("config"), dict) else {}
    spec = cfg.get("spec") if isinstance(cfg.get("spec"), dict) else {}
    backend = spec.get("backend") if isinstance(spec.get("backend"), dict) else {}
    header = {
        "guidellm_version": (data.get("metadata") or {}).get("guidellm_version"),
        "model_id": backend.get("model"),
        "profile": prof,
        "date": b.get("start_time"),
    }
    dur = b.get("duration")
    return Imported(
        tool=TOOL,
        files=[str(path)],
        records=recs,
        errors=errors,
        duration_s=float(dur) if isinstance(dur, (int, float)) and dur > 0 else None,
        latency_origin="send",
        workload=workload,
        comparisons=_comparisons(b.get("metrics") or {}, recs, extra),
        header=header,
        notes=notes,
        name=f"guidellm-{kind or 'run'}",
    )
