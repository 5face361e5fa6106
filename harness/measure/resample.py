"""Intervals of means and standard deviations: the bootstrap, by request.

Latencies are skewed (a long right tail), so the normal-theory t-interval of a mean is off in the
tail direction; a t-interval on log values would bound the geometric mean, not the mean vLLM
reports. The BCa bootstrap (Efron 1987; scipy.stats.bootstrap) corrects the percentile interval
for bias and skewness and is second-order accurate. Samples are resampled as units: one value per
request for TTFT/TPOT/E2E/queue; for ITL a request's gaps move together, so whole requests are
resampled and the statistic is the pooled one (mean ITL = Σ gaps / Σ count).

Fewer than ``MIN_SAMPLES`` requests give an open interval: the bootstrap of a handful of values
only returns their range. Above ``BCA_MAX`` requests the percentile interval is used (BCa's
jackknife costs n² and its correction vanishes as n grows). The resampling is seeded, so a run's
summary is reproducible.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from harness.measure.intervals import Interval, open_interval

MIN_SAMPLES = 10
BCA_MAX = 5000
RESAMPLES = 2000
SEED = 20261207


def _bootstrap(
    data: tuple[np.ndarray, ...], statistic: Callable, confidence: float, label: str
) -> Interval:
    n = data[0].size
    if n < MIN_SAMPLES:
        return open_interval(confidence, f"bootstrap: fewer than {MIN_SAMPLES} requests", n)
    point = float(statistic(*data, axis=-1))
    if all(np.all(d == d[0]) for d in data):
        return Interval(point, point, confidence, f"{label}: every sample equal", n)
    method = "BCa" if n <= BCA_MAX else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample is reported as NaN below
        res = sps.bootstrap(
            data,
            statistic,
            paired=len(data) > 1,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method=method,
            rng=np.random.default_rng(SEED),
            batch=max(1, 2_000_000 // max(n, 1)),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return open_interval(confidence, f"{label}: bootstrap undefined", n)
    return Interval(min(low, point), max(high, point), confidence, f"{label} ({method})", n)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _std(x, axis=-1):
    return np.std(x, axis=axis)


def mean_interval(values: Sequence[float], confidence: float) -> Interval:
    """Bootstrap interval of the mean of independent per-request values."""
    x = np.asarray(values, dtype=float)
    return _bootstrap((x,), _mean, confidence, "bootstrap by request")


def std_interval(values: Sequence[float], confidence: float) -> Interval:
    """Bootstrap interval of the population standard deviation (ddof=0, as the summary's)."""
    x = np.asarray(values, dtype=float)
    return _bootstrap((x,), _std, confidence, "bootstrap by request")


def _ratio(s, c, axis=-1):
    return np.sum(s, axis=axis) / np.sum(c, axis=axis)


def _pooled_std(s, s2, c, axis=-1):
    n = np.sum(c, axis=axis)
    mean = np.sum(s, axis=axis) / n
    return np.sqrt(np.maximum(np.sum(s2, axis=axis) / n - mean**2, 0.0))


def _units(groups: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kept = [np.asarray(g, dtype=float) for g in groups if len(g)]
    return (
        np.array([g.sum() for g in kept]),
        np.array([np.square(g).sum() for g in kept]),
        np.array([float(g.size) for g in kept]),
    )


def pooled_mean_interval(groups: Sequence[Sequence[float]], confidence: float) -> Interval:
    """Interval of the pooled mean of values that come in groups (ITL gaps per request): whole
    groups resampled, statistic Σ values / Σ count."""
    s, _, c = _units(groups)
    return _bootstrap((s, c), _ratio, confidence, "bootstrap by request (clustered)")


def pooled_std_interval(groups: Sequence[Sequence[float]], confidence: float) -> Interval:
    """Interval of the pooled population standard deviation of grouped values, groups
    resampled."""
    s, s2, c = _units(groups)
    return _bootstrap((s, s2, c), _pooled_std, confidence, "bootstrap by request (clustered)")
