"""The contents of ``summary.json``: the skeleton a run writes at its start, its ``hardware`` and
``layout`` header, the ``slo`` rows, the overall verdict rule, and the final (or partial) summary
of a run from what its engine handed back (``harness.engines.base.EngineResult``).

No torch import: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Mapping

from harness import SCHEMA_VERSION, __version__
from harness.measure.metric_intervals import DEFAULT_CONFIDENCE, metric_intervals, samples_of
from harness.measure.metrics import RequestRecord, client_queue_s, summarize
from harness.measure.percentiles import STAT_NAMES, stats
from harness.measure.sequential import SequentialRule, final_verdicts
from harness.measure.slo_verdicts import PASS, judge_slo, overall, row_verdict
from harness.spec.slo import per_request_thresholds_ms, preset_caveat


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_summary(
    name: str,
    hardware: Mapping[str, Any],
    layout: Mapping[str, Any],
    predicted: Mapping[str, Any] | None = None,
    started_utc: str | None = None,
) -> dict:
    """The summary a run writes at its start: every key present, ``complete: false``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "incomplete_reason": "run in progress (or killed before it finished)",
        "name": name,
        "started_utc": started_utc or utc_now(),
        "finished_utc": None,
        "wall_s": None,
        "warmup_s": None,
        "hardware": dict(hardware),
        "layout": dict(layout),
        "metrics": {},
        "slo": [],
        "verdict": "INCOMPLETE",
        "measured": {},
        "predicted": dict(predicted or {}),
        "stage_stats": [],
        "cross_checks": [],
        "notes": [],
    }


def slo_rows(verdicts: Iterable[Any]) -> list[dict]:
    """SLO verdicts → the summary's ``slo`` rows: a measured run's
    (``harness.measure.slo_verdicts.SloVerdict``, with their bounds and rule) as they are; point
    verdicts (``harness.spec.slo.SloVerdict``) with ``passed`` only."""
    rows = []
    for v in verdicts:
        if hasattr(v, "to_row"):
            rows.append(v.to_row())
            continue
        rows.append(
            {
                "target": v.target.text,
                "measured": v.measured,
                "passed": v.passed,
                "margin_pct": v.margin_pct,
            }
        )
    return rows


def overall_verdict(slo: list[dict], complete: bool) -> str:
    """INCOMPLETE for an unfinished run; else the SLO rows' overall verdict
    (``harness.measure.slo_verdicts.overall``): FAIL, INCONCLUSIVE, UNMEASURED (a target with no
    value, or no target) or PASS."""
    if not complete:
        return "INCOMPLETE"
    return overall(slo)


def slo_passed(slo: list[dict]) -> bool:
    """Every row PASS (and at least one)."""
    return bool(slo) and all(row_verdict(r) == PASS for r in slo)


def summary_header(spec: Any, env: Mapping[str, Any] | None = None) -> dict:
    """``hardware`` and ``layout`` of a summary from a validated ``harness.spec.spec.Spec``."""
    env = env or {}
    names = env.get("gpu_names") or []
    lay = spec.layout
    return {
        "hardware": {
            "gpu": spec.cluster.gpu,
            "gpu_name": names[0] if names else "cpu",
            "total_gpus": lay.world_size,
            "nodes": spec.cluster.nodes,
            "backend": env.get("backend") or ("nccl" if names else "gloo"),
        },
        "layout": {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
    }


def confidence_of(spec: Any) -> float:
    """The spec's ``slo.confidence`` (default 0.95)."""
    return float(getattr(getattr(spec, "slo", None), "confidence", None) or DEFAULT_CONFIDENCE)


def goodput_thresholds_ms(spec: Any) -> dict[str, float]:
    """Per-request goodput thresholds (ms): the spec's own ``slo.goodput`` (vLLM's ``--goodput``)
    when given, else the tightest latency target per metric
    (``harness.spec.slo.per_request_thresholds_ms``)."""
    own = getattr(getattr(spec, "slo", None), "goodput", None)
    return dict(own) if own else per_request_thresholds_ms(spec.slo_targets)


def sequential_rule(spec: Any, budget: int):
    """``slo.until_decided``'s stopping rule (``harness.measure.sequential``) over ``budget``
    measured requests, or None when the spec does not ask for it."""
    if not getattr(spec.slo, "until_decided", False):
        return None
    return SequentialRule(
        spec.slo_targets,
        goodput_thresholds_ms(spec),
        confidence_of(spec),
        budget,
        spec.slo.max_seconds,
    )


def partial_summary(spec: Any, records: Iterable[Any], reason: str) -> dict:
    """What the reporting process can say on its own when a run stops early: completed requests
    only."""
    recs = [
        r if isinstance(r, RequestRecord) else RequestRecord.from_dict(r) for r in list(records)
    ]
    metrics = summarize(recs, slo_thresholds_ms=goodput_thresholds_ms(spec))
    return {
        "complete": False,
        "incomplete_reason": reason,
        "verdict": "INCOMPLETE",
        "metrics": metrics,
        "finished_utc": utc_now(),
    }


def metrics_from_send(
    records: Iterable[RequestRecord], thresholds_ms: Mapping[str, float] | None
) -> dict | None:
    """vLLM's definitions where they differ from the summary's ``metrics`` (TTFT and E2E from the
    scheduled arrival): ``{stat}_ttft_ms``, ``{stat}_e2el_ms``, ``good_requests`` and
    ``request_goodput`` with TTFT and E2E from the SEND, and ``{stat}_client_queue_ms`` (send −
    arrival, the wait a client-side cap or a lagging client added). None when no request records a
    send apart from its arrival (then both definitions agree)."""
    recs = list(records)
    if not any(r.sent_s is not None for r in recs if not r.warmup):
        return None
    m = summarize(recs, slo_thresholds_ms=thresholds_ms, latency_origin="send")
    out = {
        k: v
        for k, v in m.items()
        if k.endswith(("_ttft_ms", "_e2el_ms")) and not k.startswith("warmup")
    }
    out.update(good_requests=m["good_requests"], request_goodput=m["request_goodput"])
    waits = stats(client_queue_s(r) for r in recs if not r.warmup and r.completed)
    out.update(
        {
            f"{name}_client_queue_ms": None if waits[name] is None else waits[name] * 1e3
            for name in STAT_NAMES
        }
    )
    return out


def final_summary(spec: Any, predicted: Mapping[str, Any], result: Any) -> tuple[dict, dict]:
    """An engine's result → (summary, tables). The same for every engine: metrics from the common
    request records (``harness.measure.metrics.summarize``: duration from the first scheduled
    arrival to the last finish), SLO verdicts from those metrics, the engine's own summary parts
    beside them. ``tables`` holds the requests table plus every table the engine produced, and no
    other."""
    records = list(result.records)
    thresholds = goodput_thresholds_ms(spec)
    metrics = summarize(records, slo_thresholds_ms=thresholds)
    confidence = confidence_of(spec)
    samples = samples_of(records, thresholds, duration_s=metrics.get("duration_s"))
    verdicts = judge_slo(spec.slo_targets, metrics, samples, confidence)
    if result.extra.get("sequential"):  # run until decided: the verdicts of its final look
        verdicts = final_verdicts(spec.slo_targets, records, thresholds, result.extra["sequential"])
    measured = dict(result.measured)
    measured["throughput_rps"] = metrics.get("request_throughput")
    summary = {
        "complete": result.complete,
        "incomplete_reason": result.incomplete_reason,
        "name": spec.name,
        "harness_version": __version__,
        "finished_utc": utc_now(),
        "wall_s": result.wall_s,
        "warmup_s": result.warmup_s,
        "hardware": dict(result.hardware),
        "layout": dict(result.layout),
        "metrics": metrics,
        "intervals": metric_intervals(samples, confidence),
        "slo": slo_rows(verdicts),
        "verdict": overall(verdicts) if result.complete else "INCOMPLETE",
        "measured": measured,
        "predicted": dict(predicted),
        **result.extra,
    }
    send = metrics_from_send(records, goodput_thresholds_ms(spec))
    if send is not None:
        summary["metrics_from_send"] = send
    caveat = preset_caveat(spec.slo.preset, metrics.get("duration_s"))
    if caveat is not None:
        summary["slo_preset"] = caveat
        summary["notes"] = (
            list(summary.get("notes") or [])
            + [caveat["note"]]
            + ([caveat["warning"]] if caveat["warning"] else [])
        )
    requests = []
    for r in records:
        row = r.to_dict()
        if result.tokens is not None:
            row["tokens"] = result.tokens.get(r.request_id)
        requests.append(row)
    return summary, {"requests": requests, **result.tables}
