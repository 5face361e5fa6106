"""Confidence intervals and three-valued verdicts on synthetic data with a known truth.

Coverage: 1000 simulated samples of n = 24, 100, 1000 from a lognormal, a bimodal and a heavy-tailed
(Pareto) distribution: the 95 % interval of a percentile covers the true quantile in ≥ 93 % of
them. The order-statistic ranks depend on n only, so each check is one sort of a 1000×n array.
Binomial decisions are checked against hand-computed values and MLPerf LoadGen's published ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.measure.batch_means import garwood, rate_interval
from harness.measure.intervals import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    binom_le,
    decide_quantile,
    design_effect,
    more_to_decide,
    order_ranks,
    quantile_interval,
)
from harness.measure.metric_intervals import metric_intervals, samples_of
from harness.measure.metrics import RequestRecord, summarize
from harness.measure.resample import mean_interval, pooled_mean_interval
from harness.measure.slo_verdicts import judge_slo, overall
from harness.spec.slo import resolve_targets

SIMS = 1000


def _draw(dist: str, rng: np.random.Generator, shape) -> np.ndarray:
    if dist == "lognormal":
        return rng.lognormal(0.0, 1.0, shape)
    if dist == "bimodal":  # 70 % fast around 1, 30 % slow around 5
        slow = rng.random(shape) < 0.3
        return np.where(slow, rng.normal(5.0, 0.5, shape), rng.normal(1.0, 0.1, shape))
    return 1.0 + rng.pareto(1.5, shape)  # heavy tail: infinite variance


def _true_quantile(dist: str, q: float) -> float:
    if dist == "lognormal":
        return float(np.exp(sps.norm.ppf(q)))
    if dist == "pareto":
        return float((1.0 - q) ** (-1.0 / 1.5))
    # bimodal: solve the mixture's cdf
    f = lambda x: 0.7 * sps.norm.cdf(x, 1.0, 0.1) + 0.3 * sps.norm.cdf(x, 5.0, 0.5) - q  # noqa: E731
    lo, hi = -1.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("dist", ["lognormal", "bimodal", "pareto"])
@pytest.mark.parametrize("n", [24, 100, 1000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_percentile_interval_covers_the_true_quantile(dist, n, q):
    rng = np.random.default_rng([["lognormal", "bimodal", "pareto"].index(dist), n, int(q * 100)])
    xs = np.sort(_draw(dist, rng, (SIMS, n)), axis=1)
    truth = _true_quantile(dist, q)
    low_r, high_r = order_ranks(n, q, 0.025)
    low = xs[:, low_r - 1] if low_r else np.full(SIMS, -np.inf)
    high = xs[:, high_r - 1] if high_r else np.full(SIMS, np.inf)
    covered = np.mean((low <= truth) & (truth <= high))
    assert covered >= 0.93, f"{dist} n={n} q={q}: coverage {covered:.3f}"
    # the vectorised ranks are the function's: one sample through quantile_interval agrees
    iv = quantile_interval(xs[0], q, 0.95)
    assert iv.low == (None if not low_r else xs[0, low_r - 1])
    assert iv.high == (None if not high_r else xs[0, high_r - 1])
    # small n: the p99's interval is open above (no narrow guess), and wide where it is closed
    if q == 0.99 and n < 300:
        assert high_r is None and iv.high is None


def test_order_ranks_hand_values():
    # n = 24, median: P(B ≤ 6) = 0.0113 ≤ 0.025 < P(B ≤ 7) = 0.0320 → l = 7; symmetric u = 18
    assert order_ranks(24, 0.5, 0.025) == (7, 18)
    assert binom_le(6, 24, 0.5) == pytest.approx(sum(math.comb(24, k) for k in range(7)) / 2**24)
    # p99 of 24: every sample is below the true p99 with probability 0.99^24 = 0.786: no upper rank
    assert order_ranks(24, 0.99, 0.025) == (23, None)
    assert order_ranks(1000, 0.99, 0.025) == (983, 997)


def test_loadgen_decisions_equal_hand_computed_values():
    # no request over the limit: PASS needs q^n ≤ 1 − c → n ≥ ln(1 − c)/ln q
    assert more_to_decide(1, 0, 0.99, 0.99) + 1 == 459  # LoadGen's h_min(t=0, p99, c=0.99)
    assert math.ceil(math.log(0.05) / math.log(0.99)) == 299
    d = decide_quantile(24, 0, 0.99, 0.95)
    assert d.verdict == INCONCLUSIVE and d.more == 299 - 24
    assert d.p_pass == pytest.approx(0.99**24)
    assert decide_quantile(299, 0, 0.99, 0.95).verdict == PASS
    assert decide_quantile(298, 0, 0.99, 0.95).verdict == INCONCLUSIVE
    # p90 with 0 over: 0.9^29 = 0.047 ≤ 0.05 < 0.9^28 = 0.052
    assert decide_quantile(29, 0, 0.9, 0.95).verdict == PASS
    assert decide_quantile(28, 0, 0.9, 0.95).verdict == INCONCLUSIVE
    # 1 over of n at p99: P(B ≤ 1) = 0.99^n + n·0.01·0.99^(n−1) ≤ 0.05 from n = 473
    p473 = 0.99**473 + 473 * 0.01 * 0.99**472
    p472 = 0.99**472 + 472 * 0.01 * 0.99**471
    assert p473 <= 0.05 < p472
    assert decide_quantile(473, 1, 0.99, 0.95).verdict == PASS
    assert decide_quantile(472, 1, 0.99, 0.95).verdict == INCONCLUSIVE
    # FAIL: 3 of 24 over a p90 limit is not enough (P(B ≥ 3) = 0.43); 7 of 24 is (0.0097 ≤ 0.05)
    assert decide_quantile(24, 3, 0.9, 0.95).verdict == INCONCLUSIVE
    assert decide_quantile(24, 7, 0.9, 0.95).verdict == FAIL
    p_ge7 = 1 - sum(math.comb(24, k) * 0.1**k * 0.9 ** (24 - k) for k in range(7))
    assert decide_quantile(24, 7, 0.9, 0.95).p_fail == pytest.approx(p_ge7)
    # at exactly the limit's rate no run length decides it
    assert more_to_decide(100, 10, 0.9, 0.95) is None


def test_verdict_agrees_with_the_order_statistic_bound():
    """PASS ⇔ the one-sided upper bound at c is at or under the limit: the rule and the bounds the
    table shows cannot disagree."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(5, 400))
        xs = rng.lognormal(0, 1, n)
        limit = float(np.quantile(xs, rng.uniform(0.8, 1.0)))
        over = int(np.count_nonzero(xs > limit))
        d = decide_quantile(n, over, 0.95, 0.95)
        iv = quantile_interval(xs, 0.95, 0.90)  # one-sided 95 % bounds
        assert (d.verdict == PASS) == (iv.high is not None and iv.high <= limit)
        assert (d.verdict == FAIL) == (iv.low is not None and iv.low > limit)


def test_mean_interval_coverage_and_small_n():
    rng = np.random.default_rng(7)
    truth = math.exp(0.5)  # lognormal(0, 1) mean
    hits = [
        (lambda iv: iv.low <= truth <= iv.high)(mean_interval(rng.lognormal(0, 1, 100), 0.95))
        for _ in range(200)
    ]
    assert np.mean(hits) >= 0.88  # BCa on a skewed mean at n = 100 (measured: about 0.92)
    assert mean_interval([1.0, 2.0, 3.0], 0.95).low is None  # too few: open, not their range


def test_itl_gaps_of_one_request_move_together():
    """Requests whose gaps share a per-request speed: the design effect is large and the pooled
    intervals resample whole requests, so they are wider than the naive pooled ones."""
    rng = np.random.default_rng(3)
    groups = [rng.lognormal(0, 0.05, 50) * rng.lognormal(0, 0.5) for _ in range(40)]
    deff = design_effect(groups, 0.5)
    assert deff > 5
    pooled = np.concatenate(groups)
    naive = quantile_interval(pooled, 0.5, 0.95)
    clustered = quantile_interval(pooled, 0.5, 0.95, deff=deff, n_units=40)
    assert clustered.high - clustered.low > 2 * (naive.high - naive.low)
    m = pooled_mean_interval(groups, 0.95)
    naive_half = 1.96 * pooled.std() / math.sqrt(pooled.size)
    assert (m.high - m.low) / 2 > 2 * naive_half and m.n == 40


def test_rate_interval_is_garwood_for_poisson_and_wider_for_bursts():
    lo, hi = garwood(24, 0.95)
    assert lo == pytest.approx(15.38, abs=0.01) and hi == pytest.approx(35.71, abs=0.01)
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 100, 400))
    iv = rate_interval(t, None, 0.0, 100.0, 0.95)
    assert iv.low < 4.0 < iv.high and iv.high - iv.low < 1.6
    bursts = np.repeat(np.sort(rng.uniform(0, 100, 50)), 8)  # 8 requests finish together
    wide = rate_interval(bursts, None, 0.0, 100.0, 0.95)
    assert wide.high - wide.low > 2 * (iv.high - iv.low)
    assert rate_interval([1.0], None, 0.0, 10.0, 0.95).low is None


def _records(ttft_s: np.ndarray, tpot_s: float = 0.02, tokens: int = 8) -> list[RequestRecord]:
    out = []
    for i, ttft in enumerate(ttft_s):
        arrival = 0.25 * i
        times = [arrival + ttft + k * tpot_s for k in range(tokens)]
        out.append(
            RequestRecord(
                i, 0, arrival, arrival, times[0], times, times[-1], 32, tokens, completed=True
            )
        )
    return out


def test_slo_verdicts_pass_fail_inconclusive_with_the_count_needed():
    rng = np.random.default_rng(11)
    targets = resolve_targets(None, ["p99_ttft_ms <= 2000", "p90_ttft_ms <= 2000"])
    small = _records(rng.uniform(0.1, 0.3, 24))
    m = summarize(small)
    v = judge_slo(targets, m, samples_of(small, duration_s=m["duration_s"]), 0.95)
    assert [x.verdict for x in v] == [INCONCLUSIVE, INCONCLUSIVE] and overall(v) == INCONCLUSIVE
    assert v[0].more_requests == 275 and v[1].more_requests == 5 and v[0].high is None
    big = _records(rng.uniform(0.1, 0.3, 300))
    m = summarize(big)
    v = judge_slo(targets, m, samples_of(big, duration_s=m["duration_s"]), 0.95)
    assert [x.verdict for x in v] == [PASS, PASS] and v[0].high <= 2000
    slow = _records(rng.uniform(2.5, 3.0, 24))
    m = summarize(slow)
    v = judge_slo(targets, m, samples_of(slow, duration_s=m["duration_s"]), 0.95)
    assert [x.verdict for x in v] == [FAIL, FAIL] and v[0].low > 2000 and overall(v) == FAIL
    assert "24 of 24 requests over 2000 ms" in v[0].rule


def test_every_summary_statistic_has_an_interval():
    recs = _records(np.random.default_rng(2).lognormal(-1.5, 0.5, 60))
    m = summarize(recs, slo_thresholds_ms={"ttft": 500})
    block = metric_intervals(samples_of(recs, {"ttft": 500}, duration_s=m["duration_s"]), 0.95)
    for fam in ("ttft", "tpot", "itl", "e2el", "queue"):
        for st in ("mean", "median", "std", "p50", "p90", "p95", "p99"):
            iv = block["metrics"][f"{st}_{fam}_ms"]
            x = m[f"{st}_{fam}_ms"]
            assert (iv["low"] is None or iv["low"] <= x + 1e-9) and (
                iv["high"] is None or x <= iv["high"] + 1e-9
            ), (fam, st, iv, x)
    for key in ("request_throughput", "request_goodput", "output_throughput"):
        iv = block["metrics"][key]
        assert iv["low"] < m[key] < iv["high"]
