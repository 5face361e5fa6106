"""A forecast: calibrate, simulate the spec's workload, and judge it like a run.

``forecast(spec, source)`` returns a JSON-ready dict whose ``metrics`` are computed from the
simulated request records by the same code as a run's ``summary.json``
(``harness.measure.metrics.summarize``), so every metric key and formula is the run's; its ``slo``
rows and ``verdict`` are a run's too, three-valued from the intervals (``harness.predict.verdicts``:
PASS / FAIL when the whole interval meets / misses a target, INCONCLUSIVE when it straddles it;
``verdict_basis`` "point" when judged on the point alone, without draws); each metric is its mean
over the simulation's Monte-Carlo replications (``harness.predict.simulate.simulate_metrics``).
Beside them: the fitted model with its residuals, ``extrapolation`` (each stage feature the
workload drives outside the fitted range), and ``checked``: whether the source measured this
deployment (a run of the same layout) or it is a projection no measurement has confirmed (an
emulate profile of one device); and ``intervals``: each metric's prediction interval at a stated
level (default 90 %), from draws of the calibration's sampling error and of the residuals
(``harness.predict.draws``, ``harness.measure.prediction``).
"""

from __future__ import annotations

from harness.measure.prediction import LEVEL, draws_for
from harness.predict.calibrate import PipelineModel
from harness.predict.closure import calibrated
from harness.predict.draws import forecast_intervals
from harness.predict.simulate import simulate_metrics
from harness.predict.verdicts import forecast_slo

KIND = "harness.predict/1"
LABEL = "predicted (calibrated)"
UNCHECKED = "not checked against an {n}-GPU measurement"


def simulate_spec(spec, model: PipelineModel) -> dict:
    """Simulate ``spec``'s workload on ``model`` (``simulate_metrics``: the mean over Monte-Carlo
    replications); the summary-shaped result with SLO verdicts on the point forecast (no interval
    yet; ``harness.predict.verdicts``) and no model block."""
    from harness.results.summary import goodput_thresholds_ms

    out = simulate_metrics(spec, model, slo_thresholds_ms=goodput_thresholds_ms(spec))
    res = {
        "metrics": out["metrics"],
        **forecast_slo(spec.slo_targets, out["metrics"]),
        "extrapolation": out["extrapolation"],
        "simulation": out["simulation"],
    }
    if "metrics_from_send" in out:
        res["metrics_from_send"] = out["metrics_from_send"]
    return res


def forecast(
    spec,
    source: str,
    model: PipelineModel | None = None,
    level: float = LEVEL,
    draws: int | None = None,
    history=None,
) -> dict:
    """Calibrate from ``source`` (a run dir or an emulate JSON) and forecast ``spec``, with each
    metric's ``level`` interval from ``draws`` draws (default ``draws_for(level)``; 0: none; the
    host's run-to-run spread from the runs under ``history`` when given)."""
    model = model or calibrated(source, spec)
    out = simulate_spec(spec, model)
    draws = draws_for(level) if draws is None else draws
    if draws:
        out["intervals"] = forecast_intervals(
            spec, model, source, out["metrics"], level, draws, history
        )
        # judged again, now on the intervals: PASS / FAIL only where the whole interval decides
        out.update(forecast_slo(spec.slo_targets, out["metrics"], out["intervals"]))
    gpus = spec.layout.world_size
    if model.source.get("kind") == "run":
        checked = f"calibrated on a measured run of this layout ({model.source.get('path')})"
    else:
        checked = UNCHECKED.format(n=gpus) + (
            f": stage costs emulated on one {model.source.get('device')}"
            if model.source.get("device")
            else ""
        )
    return {
        "kind": KIND,
        "label": LABEL,
        "name": spec.name,
        "from": str(source),
        "checked": checked,
        "layout": {
            "tp": spec.layout.tp,
            "pp": spec.layout.pp,
            "dp": spec.layout.dp,
            "micro_batches": spec.micro_batches,
            "total_gpus": gpus,
        },
        "workload": {
            "arrival": spec.workload.arrival,
            "rate_rps": spec.workload.rate_rps,
            "concurrency": spec.workload.concurrency,
            "max_concurrency": spec.workload.max_concurrency,
            "num_requests": spec.workload.num_requests,
        },
        **out,
        "model": model.to_dict(),
    }


def errors_vs(prediction: dict, measured: dict, keys=None) -> dict[str, float | None]:
    """Relative error (predicted − measured) / measured per metric key (None when either is
    missing)."""
    keys = keys or (
        "median_ttft_ms",
        "median_tpot_ms",
        "median_itl_ms",
        "median_e2el_ms",
        "p99_ttft_ms",
        "p99_tpot_ms",
        "request_throughput",
        "output_throughput",
        "request_goodput",
    )
    out = {}
    for k in keys:
        p, m = prediction.get(k), measured.get(k)
        out[k] = None if p is None or m in (None, 0) else (p - m) / m
    return out
