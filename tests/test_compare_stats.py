"""``harness compare`` on synthetic pairs with a known truth: 200 pairs of runs drawn from one
distribution call a regression in at most 5 % of them; a 20 % slowdown of every latency is called in
at least 90 %. Each synthetic run: N requests, Poisson arrivals, lognormal TTFT, per-request
TPOT with token jitter (the gaps of one request move together), as a serving run produces them."""

from __future__ import annotations

import numpy as np

from harness.measure.metric_intervals import samples_of
from harness.measure.metrics import RequestRecord, summarize
from harness.verdicts.compare import compare_rows

PAIRS = 200
N = 100  # requests per run
TOKENS = 16


def synthetic_run(rng: np.random.Generator, scale: float = 1.0):
    """(summary, samples) of one run; ``scale`` multiplies every latency."""
    arrivals = np.cumsum(rng.exponential(0.25, N))
    queue = rng.exponential(0.01, N) * scale
    ttft = queue + rng.lognormal(np.log(0.12), 0.35, N) * scale
    tpot = rng.lognormal(np.log(0.1), 0.15, N) * scale
    jitter = rng.lognormal(0.0, 0.1, (N, TOKENS - 1))
    records = []
    for i in range(N):
        first = arrivals[i] + ttft[i]
        times = np.concatenate([[first], first + np.cumsum(tpot[i] * jitter[i])])
        records.append(
            RequestRecord(
                i,
                0,
                float(arrivals[i]),
                float(arrivals[i] + queue[i]),
                float(times[0]),
                times.tolist(),
                float(times[-1]),
                32,
                TOKENS,
                completed=True,
            )
        )
    m = summarize(records, slo_thresholds_ms={"ttft": 500})
    return {"metrics": m}, samples_of(records, {"ttft": 500}, duration_s=m["duration_s"])


def _regressions(scale: float, seed: int) -> tuple[int, list[str]]:
    rng = np.random.default_rng(seed)
    calls, keys = 0, []
    for _ in range(PAIRS):
        base, sb = synthetic_run(rng)
        new, sn = synthetic_run(rng, scale)
        rows, _ = compare_rows(base, new, sb, sn)
        bad = [r.key for r in rows if r.verdict == "regression"]
        calls += bool(bad)
        keys += bad
    return calls, keys


def test_identical_distributions_rarely_regress():
    calls, keys = _regressions(1.0, seed=1)
    assert calls <= 0.05 * PAIRS, (calls, sorted(set(keys)))


def test_a_twenty_percent_slowdown_is_detected():
    calls, _ = _regressions(1.2, seed=2)
    assert calls >= 0.9 * PAIRS, calls
