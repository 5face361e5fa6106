"""Closure: one factor on every fitted time, so that the calibration run's own workload, simulated,
comes out at the run's measured mean inter-token latency.

Why: the per-stage costs are fitted on each stage alone, and the simulator composes them as FIFO
servers. Where the stages share cores (the CPU twin: 8 ranks on 2 cores) a stage is slower while
the others compute and the host's stalls hit every stage at once; the features and the ``depth``
term carry only part of that, so the composed pipeline came out 6–22 % fast against the very run it
was fitted on (docs/performance.md). One factor ``f`` on every stage cost, residual, hop and the
coordinator's time closes that gap on the calibration itself; the unseen workloads are then
forecast with the same ``f``. Mean ITL is the target because it is the pipeline's round trip as
each sequence sees it, pooled over every decode step, not a percentile of a few requests.

``f`` is found by fixed-point iteration (simulate, ``f *= measured / simulated``) until the
simulated mean ITL is within ``TOLERANCE`` of the measured one, and kept within ``BOUNDS``: a model
that needs more than that is wrong in shape, not in scale, and says so in its notes. A run with no
decode interval (every request one token) or whose spec cannot be read back is left unclosed
(factor 1, with a note); an emulate profile is never closed (nothing measured end to end).
"""

from __future__ import annotations

import copy
from pathlib import Path

from harness.errors import UsageError
from harness.predict.calibrate import PipelineModel, calibrate
from harness.predict.simulate import simulate_metrics

METRIC = "mean_itl_ms"
TOLERANCE = 0.005
MAX_ITERATIONS = 8
BOUNDS = (0.5, 2.0)


def scaled(model: PipelineModel, factor: float) -> PipelineModel:
    """A copy of ``model`` with every time (costs, residuals, hops, coordinator) times
    ``factor``; the raw calibration ``samples`` are shared, not copied (they stay unscaled)."""
    out = copy.deepcopy(model, {id(model.samples): model.samples})
    for sc in out.stages:
        sc.intercept_s *= factor
        sc.coef = {k: v * factor for k, v in sc.coef.items()}
        sc.spread_s = [v * factor for v in sc.spread_s]
    out.hop_s = [h * factor for h in out.hop_s]
    out.return_s *= factor
    out.return_samples = [v * factor for v in out.return_samples]
    out.loop_s *= factor
    return out


def simulated_metric(spec, model: PipelineModel, metric: str = METRIC) -> float | None:
    return simulate_metrics(spec, model)["metrics"].get(metric)


def run_spec(run_dir: Path):
    """The calibration run's own spec (its spec.yaml), served from the trace it recorded when it
    read one."""
    from harness.spec.spec import load_spec

    spec = load_spec(run_dir / "spec.yaml", [])
    if spec.workload.trace and (run_dir / "trace.jsonl").is_file():
        spec = load_spec(
            run_dir / "spec.yaml", [f"workload.trace={(run_dir / 'trace.jsonl').resolve()}"]
        )
    return spec


def close(model: PipelineModel, run_dir: str | Path, measured: dict) -> PipelineModel:
    """``model`` closed on the run in ``run_dir`` whose measured metrics are ``measured``."""
    try:
        spec = run_spec(Path(run_dir))
    except UsageError as e:
        return _unclosed(model, f"the run's spec.yaml does not load ({e})")
    return close_on(model, spec, measured.get(METRIC))


def close_on(model: PipelineModel, spec, target: float | None) -> PipelineModel:
    """``model`` scaled so ``spec``'s workload, simulated, has ``METRIC`` = ``target`` (module
    docstring); ``closure`` on the result records the factor, the error before and after, and the
    iterations."""
    before = simulated_metric(spec, model)
    if not target or not before:
        return _unclosed(
            model, f"the run has no {METRIC} to close on (no request decoded a second token)"
        )
    factor, now, iterations = 1.0, before, 0
    while abs(now / target - 1.0) > TOLERANCE and iterations < MAX_ITERATIONS:
        factor = min(max(factor * target / now, BOUNDS[0]), BOUNDS[1])
        now = simulated_metric(spec, scaled(model, factor)) or now
        iterations += 1
        if factor in BOUNDS:
            break
    out = scaled(model, factor)
    out.closure = {
        "metric": METRIC,
        "factor": factor,
        "measured": target,
        "simulated_before": before,
        "simulated_after": now,
        "error_before": before / target - 1.0,
        "error_after": now / target - 1.0,
        "iterations": iterations,
    }
    out.notes = list(model.notes)
    if factor in BOUNDS:
        out.notes.append(
            f"the closure factor hit its bound {factor}: the stage model misses the run by more "
            f"than a "
            "scale; treat this forecast as unreliable"
        )
    return out


def calibrated(source: str | Path, spec) -> PipelineModel:
    """``calibrate(source, spec)``, closed on the run when ``source`` is a run directory."""
    from harness.results.reader import read_summary

    model = calibrate(source, spec)
    if model.source.get("kind") != "run":
        return model
    return close(model, source, read_summary(source).get("metrics") or {})


def _unclosed(model: PipelineModel, why: str) -> PipelineModel:
    out = copy.copy(model)
    out.closure = {"metric": METRIC, "factor": 1.0, "skipped": why}
    out.notes = [*model.notes, f"not closed: {why}"]
    return out
