"""The forecast's intervals (harness.measure.prediction, harness.predict.draws) on synthetic data:
order-statistic prediction intervals (hand ranks, coverage on simulated runs of three
distributions, width against sample size), the block bootstrap, and the draws through the real
simulator from a synthetic calibration whose truth is known (coverage of runs of the truth, width
against the calibration's size). No world, no run directory: quick tier."""

from __future__ import annotations

import numpy as np
import pytest

from demo_run import DEMO_CONFIG
from harness.measure.metrics import itls_s
from harness.measure.prediction import (
    band,
    block_resample,
    coverage_of,
    draws_for,
    half_width,
    inside,
    prediction_ranks,
)
from harness.predict.calibrate import PipelineModel
from harness.predict.closure import close_on
from harness.predict.draws import (
    Calibration,
    OneRun,
    forecast_intervals,
    model_draw,
    pooled_mean_ms,
    refit,
)
from harness.predict.fit import StageCost, fit_stage
from harness.predict.simulate import simulate
from harness.spec.spec import load_spec


def test_prediction_ranks_by_hand():
    # (u − l)/(B + 1) ≥ level, symmetric, the largest l
    assert prediction_ranks(39, 0.9) == (2, 38) and coverage_of(39, (2, 38)) == 0.9
    assert prediction_ranks(19, 0.9) == (1, 19) and coverage_of(19, (1, 19)) == 0.9
    assert prediction_ranks(18, 0.9) is None  # 17/19 < 0.9 for the widest pair
    assert prediction_ranks(79, 0.95) == (2, 78)
    assert prediction_ranks(100, 0.9) == (5, 96)  # 91/101 ≥ 0.9; (6, 95) would be 89/101 < 0.9
    assert (draws_for(0.9), draws_for(0.95), draws_for(0.9, 1), draws_for(0.8)) == (39, 79, 19, 19)


def test_band_ends_open_and_point():
    draws = list(range(1, 40))  # 1..39
    iv = band(draws, 20.0, 0.9)
    assert (iv.low, iv.high, iv.n, iv.confidence) == (2.0, 38.0, 39, 0.9)
    assert "draws 2 and 38 of 39" in iv.method
    wide = band(draws, 38.5, 0.9)  # a point beyond an end moves that end to it
    assert (wide.low, wide.high) == (2.0, 38.5) and "widened" in wide.method
    short = band(list(range(10)), 5.0, 0.9)  # 10 draws cannot reach 90 %: open, never narrow
    assert short.low is None and short.high is None and "19 needed" in short.method
    assert band([1.0, None, float("nan"), *range(2, 40)], 5.0, 0.9).n == 39
    assert inside(iv, 2.0) is True and inside(iv, 38.01) is False and inside(short, 5.0) is None
    assert inside({"low": None, "high": 3.0}, 4.0) is False  # beyond the closed end decides
    assert half_width(iv, 20.0) == pytest.approx(0.9) and half_width(short, 5.0) is None


DISTS = {
    "lognormal": lambda rng, size: rng.lognormal(0.0, 0.6, size),
    "bimodal": lambda rng, size: np.where(
        rng.random(size) < 0.7, rng.normal(100, 5, size), rng.normal(160, 10, size)
    ),
    "heavy tail": lambda rng, size: 50 + rng.pareto(1.5, size) * 10,
}


@pytest.mark.parametrize("dist", DISTS)
def test_coverage_of_a_runs_median_on_simulated_runs(dist):
    """2000 trials: 39 simulated runs of 48 requests (their medians are the draws) and one more
    run; its median falls inside the 90 % interval in 90 % of trials (exchangeable draws: exactly
    36/40), within 3 binomial standard deviations (±2 %)."""
    rng = np.random.default_rng(7)
    trials, draws, n = 2000, 39, 48
    meds = np.median(DISTS[dist](rng, (trials, draws + 1, n)), axis=2)
    hits = [
        inside(band(row[:draws].tolist(), float(np.mean(row[:draws])), 0.9), float(row[draws]))
        for row in meds
    ]
    assert np.mean(hits) == pytest.approx(0.90, abs=0.02)


def test_width_shrinks_with_the_runs_size():
    """A run of 16× the requests: its median's interval about 4× narrower (1/√n)."""
    rng = np.random.default_rng(3)
    widths = {}
    for n in (25, 400):
        meds = np.median(rng.lognormal(0.0, 0.6, (39, n)), axis=1)
        widths[n] = half_width(band(meds.tolist(), float(meds.mean()), 0.9), float(meds.mean()))
    assert 2.5 < widths[25] / widths[400] < 6.5


def test_block_resample_keeps_blocks_and_serial_correlation():
    rng = np.random.default_rng(0)
    idx = block_resample(100, rng)
    assert idx.size == 100 and idx.min() >= 0 and idx.max() < 100
    assert all(np.diff(idx[i : i + 10]).tolist() == [1] * 9 for i in range(0, 100, 10))
    # an AR(1) series (φ 0.9: a host's slow and fast phases): the spread of the resampled mean
    # is far wider in blocks than one by one, as the truth's (≈ √((1+φ)/(1−φ)) ≈ 4.4× iid)
    x = np.zeros(400)
    for t in range(1, 400):
        x[t] = 0.9 * x[t - 1] + rng.normal()
    blocks = np.std([x[block_resample(400, rng)].mean() for _ in range(500)])
    iid = np.std([x[rng.integers(0, 400, 400)].mean() for _ in range(500)])
    assert blocks > 2.0 * iid


# ---------------------------------------------------------------- the draws, on the simulator

TRUE_C0, TRUE_ROW, SIGMA = 0.005, 0.0005, 0.5


def _spec(requests: int, rate: float = 20.0):
    return load_spec(
        DEMO_CONFIG,
        [
            "parallel.tp=1",
            "parallel.pp=1",
            "cluster.gpus_per_node=1",
            "workload.input_len={dist: fixed, value: 8}",
            "workload.output_len={dist: fixed, value: 6}",
            f"workload.num_requests={requests}",
            f"workload.rate_rps={rate}",
            "run.warmup_requests=0",
        ],
    )


def _residuals(rng, size) -> np.ndarray:
    """A skewed step noise of mean 0 (lognormal, seconds): the host's stalls."""
    r = rng.lognormal(np.log(0.002), SIGMA, size)
    return r - np.exp(np.log(0.002) + SIGMA**2 / 2)


def _truth(rng) -> PipelineModel:
    wide = {k: (0.0, 1e12) for k in ("tokens", "rows", "attn_pairs", "depth")}
    stage = StageCost(
        0, TRUE_C0, {"rows": TRUE_ROW}, range=wide, spread_s=_residuals(rng, 20000).tolist()
    )
    return PipelineModel([stage], [0.0], 0.0, 0.0, source={"kind": "truth"})


def _calibrated(truth: PipelineModel, steps: int, requests: int, seed: int):
    """A calibration of ``steps`` measured steps and a run of ``requests`` requests, both drawn
    from ``truth``: the fitted model (closure factor 1) and what its draws resample."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, rows in enumerate(rng.integers(1, 9, steps)):
        prompts = int(rng.integers(0, rows + 1))  # rows that prefill 8 tokens, the rest decode
        f = {"tokens": float(rows + 7 * prompts), "rows": float(rows), "attn_pairs": 0.0}
        f["depth"] = 1.0
        samples.append((i, f, TRUE_C0 + TRUE_ROW * rows + float(_residuals(rng, 1)[0])))
    fit = fit_stage(0, [(f, t) for _, f, t in samples])
    model = PipelineModel([fit], [0.0], 0.0, 0.0, source={"kind": "run"}, samples=[samples])
    calib_run = OneRun(_spec(requests))
    sim = simulate(calib_run.spec, calib_run.trace, truth, calib_run.slots, seed=seed + 1)
    groups = [np.asarray(itls_s(r)) for r in sorted(sim.records, key=lambda r: r.arrival_s)]
    groups = [g for g in groups if g.size]
    target = 1e3 * sum(g.sum() for g in groups) / sum(g.size for g in groups)
    # closed on the calibration's own mean ITL, as `harness predict` closes a run's model
    return close_on(model, calib_run.spec, target), Calibration(calib_run, groups)


def _intervals(model, calib, spec, draws=19, level=0.9):
    import harness.predict.draws as d

    point = OneRun(spec)(model, 0)
    orig = d.calibration_of
    d.calibration_of = lambda source, history=None: calib  # synthetic, not a run directory
    try:
        return point, forecast_intervals(spec, model, "synthetic", point, level, draws)
    finally:
        d.calibration_of = orig


def test_draws_cover_runs_of_the_truth():
    """5 calibrations of 120 steps and 24 requests drawn from a known truth; each one's 90 %
    interval (19 draws) of median TPOT against 20 runs of the truth: 90 % inside if the draws are
    exchangeable with a run (residual resampling alone covered 45–75 % of them: a calibration this
    small is off by more than a run's own noise)."""
    truth = _truth(np.random.default_rng(11))
    spec = _spec(24)
    truth_runs = [OneRun(spec)(truth, 500 + i)["median_tpot_ms"] for i in range(20)]
    hits = []
    for trial in range(5):
        model, calib = _calibrated(truth, 120, 24, seed=100 + trial)
        point, ivs = _intervals(model, calib, spec)
        iv = ivs["metrics"]["median_tpot_ms"]
        assert iv["low"] <= point["median_tpot_ms"] <= iv["high"]
        assert ivs["ranks"] == [1, 19] and ivs["coverage"] == pytest.approx(0.9)
        hits += [inside(iv, v) for v in truth_runs]
    assert np.mean(hits) >= 0.8, np.mean(hits)


def test_calibration_draws_narrow_with_more_calibration():
    """Step 1's spread (a stage's refitted intercept; the closure target, the calibration's
    pooled mean ITL) over 40 draws: 16× the steps, about 4× narrower (1/√n); 16× the requests,
    narrower by less (measured 2×): requests served in the same steps share their noise, and the
    longer blocks of the larger run (⌈√n⌉ requests) keep more of that correlation."""
    truth = _truth(np.random.default_rng(11))
    spread = {}
    for steps, requests in ((120, 24), (1920, 384)):
        model, calib = _calibrated(truth, steps, requests, seed=5)
        rngs = [np.random.default_rng([9, b]) for b in range(40)]
        c0 = [refit(model, rng).stages[0].intercept_s for rng in rngs]
        n = len(calib.itl_groups)
        itl = [pooled_mean_ms(calib.itl_groups, block_resample(n, rng)) for rng in rngs]
        spread[steps] = (np.std(c0), np.std(itl))
    assert 2.5 < spread[120][0] / spread[1920][0] < 6.5, spread
    assert 1.5 < spread[120][1] / spread[1920][1] < 6.5, spread


def test_model_draws_spread_with_the_calibration_and_not_without_one():
    truth = _truth(np.random.default_rng(11))
    model, calib = _calibrated(truth, 120, 24, seed=1)
    draws = [model_draw(model, calib, b) for b in range(8)]
    c0 = [m.stages[0].intercept_s for m in draws]
    assert np.std(c0) > 0 and len(set(c0)) == 8  # refitted per draw, seeded by b
    again = model_draw(model, calib, 3)
    assert again.stages[0].intercept_s == c0[3]  # the same draw twice: the same model
    assert model_draw(model, None, 3) is model  # an emulate profile: residual resampling alone


def test_history_adds_the_hosts_run_to_run_spread(tmp_path):
    """A calibration (a synthetic run directory) and two earlier runs of its spec whose mean ITL
    was 0.8× and 1.25× its own: s = sd(ln) ≈ 0.22 over k = 3, so each draw's scale moves by
    exp(0.22·√(4/3)·T), T ~ t(2): the intervals widen several-fold. One earlier run is too few:
    the forecast says so and does not widen."""
    import json
    import shutil

    from harness.predict.closure import calibrated
    from harness.predict.forecast import forecast
    from run_fixtures import build_synthetic_run

    # its requests' TPOT near what its steps simulate to: the closure converges at once
    run = build_synthetic_run(tmp_path / "calibration", tpot_s=0.0165)
    spec = load_spec(DEMO_CONFIG, ["workload.num_requests=24"])
    model = calibrated(run, spec)  # closed once, the three forecasts share it
    hist = tmp_path / "history"
    for i, factor in enumerate((0.8, 1.25)):
        other = hist / f"run-{i}"
        shutil.copytree(run, other)
        summary = json.loads((other / "summary.json").read_text())
        summary["metrics"]["mean_itl_ms"] *= factor
        (other / "summary.json").write_text(json.dumps(summary))
    plain = forecast(spec, str(run), model=model, draws=19)
    wide = forecast(spec, str(run), model=model, draws=19, history=str(hist))
    key = "median_tpot_ms"
    w0 = half_width(plain["intervals"]["metrics"][key], plain["metrics"][key])
    w1 = half_width(wide["intervals"]["metrics"][key], wide["metrics"][key])
    assert w1 > 2 * w0, (w0, w1)
    assert "over 3 runs of the calibration's spec" in wide["intervals"]["sources"][-1]
    shutil.rmtree(hist / "run-1")
    few = forecast(spec, str(run), model=model, draws=19, history=str(hist))
    assert len(few["intervals"]["sources"]) == 2
    assert "fewer than 3 runs" in few["intervals"]["not_included"]
    assert few["intervals"]["metrics"][key] == plain["intervals"]["metrics"][key]
