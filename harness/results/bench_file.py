"""A run as ``vllm bench serve --save-result [--save-detailed]`` writes it: one flat JSON object
with vLLM's top-level keys, units and definitions, so vLLM's own plotting and sweep scripts read it.

Pure functions over request records (``harness.measure.metrics.RequestRecord``, non-warm-up only,
in request-id order); :func:`write_bench_file` writes the result atomically.

vLLM's definitions, which the vLLM-named keys follow (vllm/benchmarks/serve.py, 0.32):

* ``duration`` (s): its client's clock from before the first send to after the last response;
  for a harness run, the run's measured duration (first scheduled arrival → last finish).
* ``completed`` / ``failed``: requests that finished successfully / all the others (a request still
  in flight when a run stopped is failed here). Token totals over completed requests only.
* ``request_throughput`` = completed / duration, ``output_throughput`` = Σ output tokens / duration,
  ``total_token_throughput`` = (Σ input + Σ output tokens) / duration, ``request_goodput`` =
  completed requests meeting EVERY ``--goodput`` threshold / duration (null without thresholds).
* TTFT and E2EL from the SEND (``RequestRecord.sent_s``, else the arrival); TPOT =
  (E2EL − TTFT) / (n − 1) over requests with n > 1 output tokens; ITL pooled over requests.
* ``{mean,median,std}_<metric>_ms`` and ``p<q>_<metric>_ms`` for each selected percentile q:
  numpy's mean, median, population std and linear-interpolation percentile of the values in ms;
  0.0 for an empty list (numpy of ``[] or 0``, as vLLM).
* ``max_output_tokens_per_s`` / ``max_concurrent_requests``: harness.measure.peaks.
* detailed lists, one entry per request: ``input_lens``, ``output_lens`` (0 for a failed request),
  ``ttfts`` (s, 0.0 without a first token), ``itls`` (s), ``latencies`` (E2EL s, 0.0 when failed),
  ``start_times`` (the send, s on the run's clock), ``queue_times`` (client queue s), ``errors``
  ("" when completed).

Ours beside them, where the harness's definition differs (from the SCHEDULED arrival):
``*_ttft_including_client_queue_ms`` (our TTFT), ``*_e2el_including_client_queue_ms`` (our E2E,
the same as vLLM's key of that name) and ``*_client_queue_time_ms`` (send − arrival), always
written; ``harness_intervals`` (each vLLM-keyed statistic's confidence interval, over the file's
own values: ``harness.measure.metric_intervals``) and ``harness_slo`` (the run's SLO verdicts, each
with its bounds and the rule that decided it, and the overall verdict)."""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from harness import __version__
from harness.errors import UsageError
from harness.measure.metric_intervals import DEFAULT_CONFIDENCE, interval_of, samples_of
from harness.measure.metrics import (
    RequestRecord,
    client_queue_s,
    e2e_s,
    itls_s,
    latency_values_s,
    meets_slo,
    normalize_slo,
    start_s,
    tokens_out,
    ttft_s,
)
from harness.measure.peaks import peaks
from harness.measure.percentiles import percentile, stats
from harness.results.atomic import atomic_write_text, json_default

# Metric families a result file may carry statistics for (vLLM's names).
VLLM_METRICS = ("ttft", "tpot", "itl", "e2el", "client_queue_time", "e2el_including_client_queue")
# vLLM's default omits e2el; its sweeps read it
DEFAULT_PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
DEFAULT_METRIC_PERCENTILES = (99.0,)
OURS = ("ttft_including_client_queue", "e2el_including_client_queue", "client_queue_time")
HEADER_KEYS = (
    "date",
    "endpoint_type",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "num_prompts",
    "request_rate",
    "burstiness",
    "max_concurrency",
)
DETAILED_KEYS = (
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "queue_times",
    "errors",
)


def percentile_word(q: float) -> str:
    """vLLM's key spelling of percentile q: 99 → "99", 99.9 → "99.9"."""
    return str(int(q)) if int(q) == q else str(q)


def metric_stats_ms(
    metric: str, values_s: Sequence[float], percentiles: Iterable[float]
) -> dict[str, float]:
    """``mean_/median_/std_/p<q>_<metric>_ms`` of values in seconds, vLLM's way (0.0 when empty)."""
    values = list(values_s) or [0.0]
    st = stats(values)
    out = {
        f"mean_{metric}_ms": st["mean"] * 1e3,
        f"median_{metric}_ms": st["median"] * 1e3,
        f"std_{metric}_ms": st["std"] * 1e3,
    }
    for q in percentiles:
        out[f"p{percentile_word(q)}_{metric}_ms"] = percentile(values, q) * 1e3
    return out


def family_values_s(done: Sequence[RequestRecord]) -> dict[str, list[float]]:
    """Per family of the file, the values (s): vLLM's from the send, ours from the arrival."""
    send, arrival = latency_values_s(done, "send"), latency_values_s(done, "arrival")
    return {
        "ttft": send["ttft"],
        "tpot": send["tpot"],
        "itl": send["itl"],
        "e2el": send["e2el"],
        "client_queue_time": send["client_queue"],
        "e2el_including_client_queue": arrival["e2el"],
        "ttft_including_client_queue": arrival["ttft"],
    }


def _error(r: RequestRecord, errors: Mapping[int, str]) -> str:
    if r.completed:
        return ""
    if errors.get(r.request_id):
        return str(errors[r.request_id])
    return "aborted" if r.finish_s is not None else "not finished when the run stopped"


def _check_choices(percentile_metrics: Sequence[str], metric_percentiles: Sequence[float]) -> None:
    for m in percentile_metrics:
        if m not in VLLM_METRICS:
            raise UsageError(
                f"--percentile-metrics: unknown metric {m!r}; use some of {', '.join(VLLM_METRICS)}"
            )
    for q in metric_percentiles:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 100:
            raise UsageError(f"--metric-percentiles: {q!r} is not a percentile in [0, 100]")


def bench_result(
    records: Iterable[RequestRecord],
    header: Mapping[str, Any],
    duration_s: float,
    *,
    goodput_ms: Mapping[str, float] | None = None,
    percentile_metrics: Sequence[str] = DEFAULT_PERCENTILE_METRICS,
    metric_percentiles: Sequence[float] = DEFAULT_METRIC_PERCENTILES,
    detailed: bool = True,
    errors: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Records → vLLM's result object (see the module docstring). ``header``: the keys of
    ``HEADER_KEYS`` (:func:`header_from_run`); ``goodput_ms``: vLLM's ``--goodput`` thresholds
    ({"ttft": 500, "tpot": 100}); ``detailed``: the per-request lists (``--save-detailed``)."""
    if not duration_s or not duration_s > 0:
        raise UsageError(
            f"duration: must be > 0 s, got {duration_s!r}; the run has no finished request"
        )
    _check_choices(percentile_metrics, metric_percentiles)
    slo = normalize_slo(goodput_ms) if goodput_ms else None
    main = sorted((r for r in records if not r.warmup), key=lambda r: r.request_id)
    done = [r for r in main if r.completed]
    out_lens = [tokens_out(r) if r.completed else 0 for r in main]
    total_in, total_out = sum(r.input_len for r in done), sum(out_lens)
    good = None if slo is None else sum(1 for r in done if meets_slo(r, slo, "send"))
    result: dict[str, Any] = {k: header.get(k) for k in HEADER_KEYS}
    result.update(
        {
            "duration": duration_s,
            "completed": len(done),
            "failed": len(main) - len(done),
            "total_input_tokens": total_in,
            "total_output_tokens": total_out,
            "request_throughput": len(done) / duration_s,
            "request_goodput": None if good is None else good / duration_s,
            "output_throughput": total_out / duration_s,
            "total_token_throughput": (total_in + total_out) / duration_s,
        }
    )
    if detailed:
        errs = errors or {}
        result.update(
            {
                "input_lens": [r.input_len for r in main],
                "output_lens": out_lens,
                "ttfts": [ttft_s(r, "send") or 0.0 for r in main],
                "itls": [itls_s(r) for r in main],
                "latencies": [e2e_s(r, "send") if r.completed else 0.0 for r in main],
                "start_times": [start_s(r, "send") for r in main],
                "queue_times": [client_queue_s(r) for r in main],
                "errors": [_error(r, errs) for r in main],
            }
        )
    result.update(
        peaks(
            (start_s(r, "send"), r.token_times_s, r.finish_s)
            for r in done
            if r.finish_s is not None
        )
    )
    result["rtfx"] = 0.0
    values = family_values_s(done)
    for metric in [*dict.fromkeys([*percentile_metrics, *OURS])]:
        result.update(metric_stats_ms(metric, values[metric], metric_percentiles))
    result["harness_version"] = __version__
    return result


# ---------------------------------------------------------------- a run's header, the file


def _vllm_date(utc: str | None) -> str:
    """vLLM's ``date`` spelling (YYYYmmdd-HHMMSS) of a run's ``started_utc``."""
    try:
        when = _dt.datetime.strptime(str(utc), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        when = _dt.datetime.now(_dt.timezone.utc)
    return when.strftime("%Y%m%d-%H%M%S")


def header_from_run(spec: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's header keys from a run's resolved spec (``spec.yaml``) and ``summary.json``:
    request_rate "inf" for a closed loop or a trace, burstiness 1 (Poisson), b (gamma) or "inf"
    (constant), max_concurrency the closed loop's concurrency or the open loop's cap."""
    w, model = spec.get("workload") or {}, spec.get("model") or {}
    closed = w.get("arrival") == "closed"
    rate = "inf" if closed or w.get("trace") or w.get("rate_rps") is None else float(w["rate_rps"])
    burst = {"gamma": w.get("burstiness", 1.0), "constant": "inf"}.get(w.get("arrival"), 1.0)
    engine = summary.get("engine") if isinstance(summary.get("engine"), dict) else {}
    model_id = model.get("checkpoint") or model.get("config") or model.get("preset")
    m = summary.get("metrics") or {}
    backend = engine.get("kind") or "reference"
    header = {
        "date": _vllm_date(summary.get("started_utc")),
        "endpoint_type": backend,
        "backend": backend,
        "label": spec.get("name") or summary.get("name"),
        "model_id": model_id,
        "tokenizer_id": model_id,
        "num_prompts": m.get("num_requests"),
        "request_rate": rate,
        "burstiness": burst,
        "max_concurrency": w.get("concurrency") if closed else w.get("max_concurrency"),
    }
    # An imported vllm bench serve result keeps its own header (harness.commands.import_bench).
    header.update({k: engine[k] for k in HEADER_KEYS if k in engine})
    return header


def bench_result_of_run(run: Any, detailed: bool = True) -> dict[str, Any]:
    """A loaded run (``harness.results.reader.load_run``) → its vLLM result object: the spec's
    ``run.percentile_metrics``/``run.metric_percentiles``; goodput over ``slo.goodput``, else the
    targets' per-request thresholds (as the run's summary); duration the run's measured one (an
    imported run: vLLM's own, and the statistics its file carried)."""
    from harness.spec.slo import per_request_thresholds_ms, resolve_targets

    spec, summary = run.spec or {}, run.summary
    engine = summary.get("engine") if isinstance(summary.get("engine"), dict) else {}
    run_opts, slo = spec.get("run") or {}, spec.get("slo") or {}
    if "goodput_ms" in engine:  # an imported result: its own --goodput thresholds, or none
        goodput = engine["goodput_ms"]
    else:
        goodput = (
            slo.get("goodput")
            or per_request_thresholds_ms(
                resolve_targets(slo.get("preset"), slo.get("targets") or [])
            )
            or None
        )
    records, errors = run_records(run.requests.to_dict("records"))
    duration = engine.get("duration_s") or (summary.get("metrics") or {}).get("duration_s")
    result = bench_result(
        records,
        header_from_run(spec, summary),
        duration,
        goodput_ms=goodput,
        percentile_metrics=engine.get("percentile_metrics")
        or run_opts.get("percentile_metrics")
        or DEFAULT_PERCENTILE_METRICS,
        metric_percentiles=engine.get("metric_percentiles")
        or run_opts.get("metric_percentiles")
        or DEFAULT_METRIC_PERCENTILES,
        detailed=detailed,
        errors=errors,
    )
    confidence = float(slo.get("confidence") or DEFAULT_CONFIDENCE)
    result["harness_intervals"] = file_intervals(result, records, goodput, duration, confidence)
    result["harness_slo"] = {
        "verdict": summary.get("verdict"),
        "confidence": confidence,
        "targets": summary.get("slo") or [],
    }
    return result


def file_intervals(
    result: Mapping[str, Any],
    records: Sequence[RequestRecord],
    goodput: Mapping[str, float] | None,
    duration_s: float,
    confidence: float,
) -> dict[str, Any]:
    """{"confidence", "metrics": {key: [low, high]}} for each statistic of the file whose
    definition the summary's intervals share: vLLM's keys from the send (None: open)."""
    samples = samples_of(records, goodput or None, "send", duration_s)
    out = {}
    for key in result:
        iv = interval_of(samples, key, confidence) if isinstance(result[key], float) else None
        if iv is not None:
            out[key] = [iv.low, iv.high]
    return {"confidence": confidence, "metrics": out}


def result_filename(header: Mapping[str, Any]) -> str:
    """vLLM's default file name: ``{label}-{rate}qps[-concurrency{c}]-{model}-{date}.json``."""
    rate = header.get("request_rate")
    rate_text = (
        "inf"
        if rate == "inf" or (isinstance(rate, float) and math.isinf(rate))
        else f"{float(rate)}"
    )
    conc = (
        f"-concurrency{header['max_concurrency']}"
        if header.get("max_concurrency") is not None
        else ""
    )
    model = str(header.get("model_id") or "model").rstrip("/").split("/")[-1]
    label = header.get("label") or header.get("backend")
    return f"{label}-{rate_text}qps{conc}-{model}-{header.get('date')}.json"


def run_records(
    requests_rows: Iterable[Mapping[str, Any]],
) -> tuple[list[RequestRecord], dict[int, str]]:
    """A requests table's rows (``Run.requests.to_dict("records")``) → records, and the ``error``
    column's texts by request id where the table has one."""
    fields = RequestRecord.__dataclass_fields__
    records, errors = [], {}
    for row in requests_rows:
        d = {k: row[k] for k in fields if k in row}
        d["token_times_s"] = [] if d.get("token_times_s") is None else list(d["token_times_s"])
        rec = RequestRecord.from_dict(d)
        records.append(rec)
        if isinstance(row.get("error"), str) and row["error"]:
            errors[rec.request_id] = row["error"]
    return records, errors


def write_bench_file(result: Mapping[str, Any], path: str | Path) -> Path:
    """The result as one JSON object, atomically; infinities as "inf" (vLLM writes its rate so)."""

    def plain(v: Any) -> Any:
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    body = {
        k: [plain(x) for x in v] if isinstance(v, list) and k != "itls" else plain(v)
        for k, v in result.items()
    }
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"--result-dir: cannot create {path.parent} ({e.strerror}); give a writable folder"
        ) from None
    return atomic_write_text(path, json.dumps(body, allow_nan=False, default=json_default))
