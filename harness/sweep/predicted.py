"""What the sweep predicts for a layout before (and beside) measuring it, and the forecast's error.

Two predictions per layout:
- the planner's (``harness.plan.search``): an analytic bound, for every candidate, instantly; on
  the CPU twin its request-rate bounds are 4 orders of magnitude above what runs measure, so it
  ranks only when nothing else can (``--calibrate none``, or an engine that records no step
  tables, such as vLLM);
- the calibrated simulator (``harness.predict``): a calibration carries only within its own
  (tp, pp): the fitted stage costs are those of that layout's shards, hops and collectives
  (``predict.calibrate`` refuses a run of another TP or PP). So the sweep runs a short calibration
  per layout: the layout's first run (its lowest load) calibrates the simulator for that layout,
  closed on its mean ITL (``predict.closure``), and the simulator then forecasts every load of the
  ladder. The calibration load's own forecast is in-sample; the error at the other loads is the
  forecast's out-of-sample error.

Ranking score: the most simulated ``request_goodput`` per GPU over the loads whose simulated
verdict is PASS (0 when none passes; ties to simulated output tokens/s per GPU at the highest
load); without a calibration, the planner's SLO capacity per GPU.
"""

from __future__ import annotations

from typing import Callable

from harness.errors import UsageError

SIM_KEYS = ("request_throughput", "output_throughput", "request_goodput", "mean_tpot_ms")
SIM_KEYS += ("median_e2el_ms", "median_ttft_ms", "p90_ttft_ms", "p90_tpot_ms")
ERROR_KEYS = ("output_throughput", "mean_tpot_ms", "median_e2el_ms", "request_goodput")


def calibrate_layout(run_dir, layout_spec) -> tuple[object | None, str | None]:
    """(the closed model, None) from the layout's calibration run, or (None, why not)."""
    from harness.predict.closure import calibrated

    try:
        return calibrated(str(run_dir), layout_spec), None
    except UsageError as e:
        return None, str(e)


def simulate_ladder(model, load_spec: Callable[[float], object], loads, gpus: int) -> list[dict]:
    """The simulated point of every load: the summary's metrics (``SIM_KEYS``), the verdict, and
    the chart's two axes."""
    from harness.predict.forecast import simulate_spec

    out = []
    for x in loads:
        try:
            spec = load_spec(x)
        except UsageError as e:
            out.append({"load": x, "refused": str(e)})
            continue
        sim = simulate_spec(spec, model)
        m = sim["metrics"]
        tpot = m.get("mean_tpot_ms")
        out.append(
            {
                "load": x,
                "verdict": sim["verdict"],
                **{k: m.get(k) for k in SIM_KEYS},
                "per_gpu": None
                if m.get("output_throughput") is None
                else m["output_throughput"] / gpus,
                "per_user": None if not tpot else 1000.0 / tpot,
                "goodput_per_gpu": None
                if m.get("request_goodput") is None
                else m["request_goodput"] / gpus,
                "sim_wall_s": sim["simulation"]["wall_s"],
            }
        )
    return out


def score(sim_points: list[dict] | None, planner: dict, gpus: int) -> tuple[float, float, str]:
    """(score, tie-break, basis) of one candidate (module docstring); higher ranks first."""
    if sim_points:
        ok = [p for p in sim_points if p.get("verdict") == "PASS" and p.get("goodput_per_gpu")]
        best = max((p["goodput_per_gpu"] for p in ok), default=0.0)
        last = [p for p in sim_points if p.get("per_gpu") is not None]
        tie = last[-1]["per_gpu"] if last else 0.0
        return best, tie, "simulator: request_goodput per GPU at its best feasible load"
    cap = planner.get("capacity_rps") or 0.0
    return cap / gpus, 0.0, "planner: SLO capacity (requests/s) per GPU"


def forecast_errors(sim_points: list[dict], measured: dict, calibration_load: float | None) -> dict:
    """Per load measured (``measured``: load -> summary metrics), the relative error
    (predicted − measured) / measured of each ``ERROR_KEYS`` metric, and per metric the mean
    absolute error over the loads other than the calibration's (out of sample)."""
    by_load = {p["load"]: p for p in sim_points if "refused" not in p}
    rows, pooled = [], {k: [] for k in ERROR_KEYS}
    for load in sorted(measured):
        pred, meas = by_load.get(load), measured[load]
        if pred is None:
            continue
        errs = {}
        for k in ERROR_KEYS:
            p, m = pred.get(k), meas.get(k)
            errs[k] = None if p is None or not m else (p - m) / m
        in_sample = load == calibration_load
        rows.append({"load": load, "in_sample": in_sample, "error": errs})
        if not in_sample:
            for k, e in errs.items():
                if e is not None:
                    pooled[k].append(abs(e))
    mean_abs = {k: (sum(v) / len(v) if v else None) for k, v in pooled.items()}
    n = max((len(v) for v in pooled.values()), default=0)
    return {"loads": rows, "mean_abs_out_of_sample": mean_abs, "n_out_of_sample": n}
