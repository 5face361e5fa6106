"""vLLM's Prometheus ``/metrics`` → rows of the ``server_metrics`` table and the server's own view
of the run (its TTFT/ITL/E2E/queue histograms, token counters, peak queue and KV-cache use).

Parsing is prometheus_client's text parser. Names (vLLM 0.32): counters are sampled as
``<family>_total``, histograms as ``_bucket{le}``/``_sum``/``_count``; every vLLM sample carries
``engine`` (one per DP rank) and ``model_name`` labels. Rows keep the samples below; the
``model_name`` label is dropped (the run says which model), the others are kept as
``k=v,k=v`` text. The summary sums counters and histograms over engines (KV-cache use: their mean,
and each engine's peak when there are several) and takes the difference between the scrape just
before the first measured request and the one after the last (``harness.measure.histogram``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
MEAN_GAUGES = ("vllm:kv_cache_usage_perc",)  # a share per engine: averaged over engines
COUNTERS = (
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:num_preemptions_total",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",  # prompt tokens looked up (only while the cache is on)
    "vllm:prefix_cache_hits_total",  # of them, served from the cache
)
# (histogram, summary key); buckets are kept for all of them.
HISTOGRAMS = (
    ("vllm:time_to_first_token_seconds", "ttft"),
    ("vllm:inter_token_latency_seconds", "itl"),
    ("vllm:e2e_request_latency_seconds", "e2el"),
    ("vllm:request_queue_time_seconds", "queue"),
    ("vllm:request_prefill_time_seconds", "prefill"),
    ("vllm:request_decode_time_seconds", "decode"),
)
_HIST_NAMES = {h for h, _ in HISTOGRAMS}
_KEEP = (
    set(GAUGES)
    | set(COUNTERS)
    | {h + s for h in _HIST_NAMES for s in ("_bucket", "_sum", "_count")}
)
_FAMILIES = set(GAUGES) | {c.removesuffix("_total") for c in COUNTERS} | set(COUNTERS) | _HIST_NAMES


def _labels_text(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("model_name", "le"))


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The kept samples of one scrape: ``{"sample", "labels", "le", "value"}`` (``le`` only for
    buckets)."""
    rows = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in _KEEP:
                continue
            le = s.labels.get("le")
            rows.append(
                {
                    "sample": s.name,
                    "labels": _labels_text(s.labels),
                    "le": float(le) if le is not None else None,
                    "value": float(s.value),
                }
            )
    return rows


def _engine(labels: str) -> str:
    return next((kv[7:] for kv in labels.split(",") if kv.startswith("engine=")), "0")


def snapshot(rows: list[dict]) -> dict[str, Any]:
    """One scrape's rows over every engine (one per DP rank): ``{"gauges", "per_engine",
    "counters", "histograms": {name: {"buckets": [(le, count)], "sum", "count"}}}``. Counters,
    histograms and the request-count gauges are summed (totals of the server); a share gauge
    (``MEAN_GAUGES``: KV-cache use, 0..1 per engine) is the mean over engines, never the sum (two
    engines at 100 % are a full server, not 200 %); ``per_engine`` keeps every gauge by engine."""
    gauges: dict[str, float] = {}
    per_engine: dict[str, dict[str, float]] = {}
    counters: dict[str, float] = {}
    hist: dict[str, dict] = {}
    for r in rows:
        name, v = r["sample"], r["value"]
        if name in GAUGES:
            by = per_engine.setdefault(_engine(r["labels"]), {})
            by[name] = by.get(name, 0.0) + v
        elif name in COUNTERS:
            counters[name] = counters.get(name, 0.0) + v
        else:
            base, _, part = name.rpartition("_")
            h = hist.setdefault(base, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if part == "bucket":
                h["buckets"][r["le"]] = h["buckets"].get(r["le"], 0.0) + v
            else:
                h[part] += v
    for h in hist.values():
        h["buckets"] = sorted(h["buckets"].items())
    for name in GAUGES:
        vals = [by[name] for by in per_engine.values() if name in by]
        if vals:
            gauges[name] = sum(vals) / len(vals) if name in MEAN_GAUGES else sum(vals)
    return {"gauges": gauges, "per_engine": per_engine, "counters": counters, "histograms": hist}


def server_view(before: dict | None, after: dict | None, window: list[dict]) -> dict[str, Any]:
    """The server's account of the measured window: histogram statistics in ms, counter increases,
    and the peaks of the gauges over the scrapes ``window`` (their snapshots)."""
    from harness.measure.histogram import window_stats

    if after is None:
        return {"available": False}
    out: dict[str, Any] = {
        "available": True,
        "source": "vLLM /metrics: scrape after warm-up → scrape after the last request",
    }
    for name, key in HISTOGRAMS:
        st = window_stats(
            after["histograms"].get(name), (before or {}).get("histograms", {}).get(name)
        )
        out[key] = {
            "count": st["count"],
            **{
                f"{k}_ms": None if st[k] is None else st[k] * 1e3
                for k in ("mean", "p50", "p90", "p99")
            },
        }
    for name in COUNTERS:
        short = name.removeprefix("vllm:").removesuffix("_total")
        a = after["counters"].get(name)
        b = (before or {}).get("counters", {}).get(name, 0.0)
        out[short] = None if a is None else a - b
    for name in GAUGES:
        vals = [s["gauges"][name] for s in window if name in s["gauges"]]
        out["max_" + name.removeprefix("vllm:")] = max(vals) if vals else None
    engines = sorted({e for s in window for e in s.get("per_engine", {})})
    if len(engines) > 1:  # the peaks of each DP engine beside the server's
        out["per_engine"] = {
            e: {
                "max_" + name.removeprefix("vllm:"): max(
                    (
                        s["per_engine"][e][name]
                        for s in window
                        if name in s["per_engine"].get(e, {})
                    ),
                    default=None,
                )
                for name in GAUGES
            }
            for e in engines
        }
    return out


def kept_lines(text: str) -> str:
    """The lines of a scrape that ``parse_metrics`` keeps (and their TYPE lines): what the client
    stores while the run goes on, parsing it only afterwards (a parse costs milliseconds of CPU)."""
    keep = []
    for line in text.splitlines():
        if line.startswith("# TYPE vllm:"):
            if line.split(" ", 3)[2] in _FAMILIES:
                keep.append(line)
        elif (
            line.startswith("vllm:")
            and line[: line.find("{") if "{" in line else line.find(" ")] in _KEEP
        ):
            keep.append(line)
    return "\n".join(keep) + "\n"


def counter_total(text: str, name: str) -> float:
    """Σ over label sets of one counter sample in (kept) exposition text, without the parser."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )
