"""A forecast's intervals: B draws of "one run of the forecast workload", each metric's interval
from them (``harness.measure.prediction``).

One draw b (seeded by b, so the same inputs give the same intervals):

1. **The calibration's sampling error.** The calibration run is measured again, by resampling it:
   its measured steps in moving blocks of consecutive steps (one block choice for every stage: a
   step keeps its stages together), each stage's cost refitted on them (``fit_stage``: the
   coefficients and the residuals the simulator draws from), the return hops resampled; and its
   completed requests, ordered by arrival, in moving blocks: their pooled mean ITL is this draw's
   closure target (the run's own mean ITL, which sets the model's scale).
2. **Closed** like the point forecast's model: the refitted model times the calibration's factor,
   then scaled until one simulated run of the calibration's workload (seed b) meets target_b within
   1 % or 6 simulations are spent: the closure's iteration (``harness.predict.closure``) from
   where it converged, a proportional step then secant steps (``reclosed``).
3. **The residuals' spread.** One simulated run of the forecast workload (its own trace, its
   request count) on that model, residuals drawn afresh: the summary's metrics.

The draws' spread thus holds the run-to-run noise of a run of this size on the calibrated host
(step 3), and how far a calibration of this size could be off (steps 1–2). It holds no change of
the host between the calibration and the run (docs/performance.md measures that part) unless a
history is given (``harness predict --history DIR``): the complete runs under DIR of the
calibration's own spec (``harness.verdicts.history.comparable_history``) and the calibration
itself, k ≥ 3 mean ITLs, give the host's run-to-run spread s of ln(mean ITL), and each draw's
closure target is further multiplied by exp(s·√(1 + 1/k)·T), T ~ Student t(k − 1): the
predictive distribution of the next run's speed, the same that ``harness history``'s noise band
uses (``harness.verdicts.change.noise_band``). It counts each run's own sampling noise a second
time (it is in the history's spread and in step 1): a little wider, never narrower.
An emulate profile (no run) has no step 1–2: its draws are residual resampling alone.
Blocks: the host has slow and fast phases, so steps and requests are serially correlated; a
block bootstrap keeps that, one by one would not (``harness.measure.prediction.block_resample``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.measure.prediction import LEVEL, band, block_resample, coverage_of, prediction_ranks
from harness.predict.calibrate import PipelineModel
from harness.predict.closure import BOUNDS, METRIC, run_spec, scaled
from harness.predict.fit import fit_stage

SEED = 20261207
FORECAST_SEED, CLOSURE_SEED = 10_000, 20_000  # simulation seeds (the point forecast uses 0..R−1)
RECLOSE_STEPS, RECLOSE_TOLERANCE = 6, 0.01


def interval_keys() -> set[str]:
    from harness.measure.metric_intervals import FAMILIES, RATES, STATS

    return {f"{st}_{fam}_ms" for fam in FAMILIES for st in STATS} | set(RATES)


class OneRun:
    """One simulated run of ``spec``'s workload (its trace and KV slots built once)."""

    def __init__(self, spec, slo_thresholds_ms=None) -> None:
        from harness.plan.planner import plan as make_plan
        from harness.plan.planner import seq_len
        from harness.spec.workload import build_trace

        self.spec, self.slo = spec, slo_thresholds_ms
        self.trace = build_trace(spec.workload, spec.shape.vocab, seq_len(spec))
        self.slots = make_plan(spec).kv_slots()

    def __call__(self, model: PipelineModel, seed: int) -> dict:
        from harness.measure.metrics import summarize
        from harness.predict.simulate import simulate

        sim = simulate(self.spec, self.trace, model, self.slots, seed=seed)
        return summarize(sim.records, slo_thresholds_ms=self.slo)


@dataclass
class Calibration:
    """What step 1 resamples beside the model's own samples: the calibration run's workload and
    each completed request's ITL gaps (seconds), in arrival order."""

    run: OneRun
    itl_groups: list[np.ndarray]
    host: tuple[float, int] | None = None  # (s, k): ln(mean ITL)'s s.d. over k runs (history)


def host_spread(run_dir, history) -> tuple[float, int] | None:
    """(s, k) of ln(mean ITL) over the calibration and its spec's complete runs under
    ``history`` (module docstring); None with fewer than 3 (UsageError: not a directory)."""
    from harness.results.reader import load_run
    from harness.verdicts.change import log_spread
    from harness.verdicts.history import comparable_history

    base = load_run(run_dir, tables=False)
    runs = [base.summary, *comparable_history(history, base, exclude=[Path(run_dir)])]
    spread = log_spread([(s.get("metrics") or {}).get(METRIC) for s in runs])
    return None if spread is None else (spread[1], spread[2])


def calibration_of(run_dir, history=None) -> Calibration | None:
    """The calibration run's spec and requests (and with ``history`` the host's spread); None when
    its spec or requests do not read (the model was then not closed either)."""
    from harness.errors import UsageError
    from harness.measure.metrics import itls_s
    from harness.results.bench_file import run_records
    from harness.results.reader import load_run

    try:
        spec = run_spec(Path(run_dir))
        run = load_run(run_dir, tables=("requests",))
    except UsageError:
        return None
    if run.requests is None or not len(run.requests):
        return None
    records, _ = run_records(run.requests.to_dict("records"))
    done = sorted((r for r in records if r.completed and not r.warmup), key=lambda r: r.arrival_s)
    groups = [np.asarray(itls_s(r), dtype=float) for r in done]
    host = host_spread(run_dir, history) if history is not None else None
    return Calibration(OneRun(spec), [g for g in groups if g.size], host)


def refit(model: PipelineModel, rng: np.random.Generator) -> PipelineModel:
    """Step 1's model: stages refitted on the steps resampled in blocks, times the closure factor
    of ``model``; return hops resampled; the rest of ``model`` as it is."""
    factor = float((model.closure or {}).get("factor") or 1.0)
    steps = sorted({st for stage in model.samples for st, _, _ in stage})
    count = Counter(steps[i] for i in block_resample(len(steps), rng))
    out = scaled(model, 1.0)
    for s, smp in enumerate(model.samples):
        pts = [(f, t) for st, f, t in smp for _ in range(count.get(st, 0))]
        if len(pts) < 2:
            pts = [(f, t) for _, f, t in smp]
        raw = fit_stage(s, pts, source=model.stages[s].source)
        out.stages[s] = scaled(PipelineModel([raw], [], 0.0, 0.0), factor).stages[0]
    if model.return_samples:
        back = np.asarray(model.return_samples)
        out.return_samples = back[rng.integers(0, back.size, back.size)].tolist()
    return out


def pooled_mean_ms(groups: list[np.ndarray], idx: np.ndarray) -> float | None:
    total = sum(float(groups[i].sum()) for i in idx)
    count = sum(groups[i].size for i in idx)
    return 1e3 * total / count if count else None


def model_draw(model: PipelineModel, calib: Calibration | None, b: int) -> PipelineModel:
    """Steps 1–2 of draw ``b``; ``model`` itself when there is no calibration run to resample."""
    if calib is None or not model.samples or not calib.itl_groups:
        return model
    rng = np.random.default_rng([SEED, b])
    drawn = refit(model, rng)
    target = pooled_mean_ms(calib.itl_groups, block_resample(len(calib.itl_groups), rng))
    if calib.host is not None and target:
        s, k = calib.host
        target *= float(np.exp(s * np.sqrt(1.0 + 1.0 / k) * rng.standard_t(k - 1)))
    return reclosed(drawn, calib.run, target, CLOSURE_SEED + b)


def reclosed(model: PipelineModel, run: OneRun, target: float | None, seed: int) -> PipelineModel:
    """``model`` scaled so that one simulated run of the calibration's workload (``seed``, the same
    for every step: common random numbers) meets ``target`` within ``RECLOSE_TOLERANCE``: a
    proportional step, then secant steps on ln(metric) against ln(factor) (queueing makes the
    metric grow faster than the factor), at most ``RECLOSE_STEPS`` simulations."""
    now = run(model, seed).get(METRIC)
    if not target or not now:
        return model
    f, prev = 1.0, None
    for _ in range(RECLOSE_STEPS - 1):
        if abs(now / target - 1.0) <= RECLOSE_TOLERANCE:
            break
        slope = 1.0
        if prev is not None and prev[0] != f and prev[1] > 0 and now != prev[1]:
            slope = min(max(np.log(now / prev[1]) / np.log(f / prev[0]), 0.5), 10.0)
        prev = (f, now)
        f = min(max(f * (target / now) ** (1.0 / slope), BOUNDS[0]), BOUNDS[1])
        now = run(scaled(model, f), seed).get(METRIC) or now
    return scaled(model, f)


def forecast_intervals(
    spec,
    model: PipelineModel,
    source,
    point: dict,
    level: float = LEVEL,
    draws: int = 39,
    history=None,
) -> dict:
    """The ``intervals`` block of a forecast: each metric of ``point`` (the point forecast's
    metrics) that a run's summary gives an interval for, at ``level``, from ``draws`` draws (with
    the host's run-to-run spread from ``history``, a folder of runs, when given)."""
    from harness.results.summary import goodput_thresholds_ms

    t0 = time.perf_counter()
    calib = calibration_of(source, history) if model.source.get("kind") == "run" else None
    run = OneRun(spec, goodput_thresholds_ms(spec))
    runs = [run(model_draw(model, calib, b), FORECAST_SEED + b) for b in range(draws)]
    keys = sorted(k for k in interval_keys() & set(point) if isinstance(point[k], (int, float)))
    ranks = prediction_ranks(draws, level)
    sources = ["residual resampling: one simulated run of this workload per draw"]
    if calib is not None:
        sources.append(
            "the calibration run's sampling error: its steps (stage costs refitted) and requests "
            "(closure target, mean ITL) block-bootstrapped per draw"
        )
    host = "a change of the host's speed between the calibration and the run"
    if calib is not None and calib.host is not None:
        sources.append(
            f"the host's run-to-run spread: ln(mean ITL) s.d. {calib.host[0]:.3f} over "
            f"{calib.host[1]} runs of the calibration's spec (--history {history})"
        )
        host = "a change of the host beyond its spread over the history's runs"
    elif history is not None:
        host += f" (--history {history}: fewer than 3 runs of the calibration's spec)"
    return {
        "level": level,
        "draws": draws,
        "ranks": list(ranks) if ranks else None,
        "coverage": coverage_of(draws, ranks) if ranks else None,
        "sources": sources,
        "not_included": host,
        "metrics": {k: band([r.get(k) for r in runs], point[k], level).to_dict() for k in keys},
        "wall_s": time.perf_counter() - t0,
    }
