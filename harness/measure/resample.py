"""Intervals of means and standard deviations: the bootstrap, by request.

Latencies are skewed (a long right tail), so the normal-theory t-interval of a mean is off in the
tail direction; a t-interval on log values would bound the geometric mean, not the mean vLLM
reports. The BCa bootstrap (Efron 1987; scipy.stats.bootstrap, or ``bca_numpy`` below where scipy
is not installed: the GPU machines) corrects the percentile interval
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

from harness.measure.intervals import Interval, open_interval
from harness.measure.special import HAVE_SCIPY, norm_cdf, norm_ppf

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
        if HAVE_SCIPY:
            from scipy import stats as sps

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
        else:
            low, high = bca_numpy(data, statistic, confidence, method == "BCa")
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


def bca_numpy(
    data: tuple[np.ndarray, ...], statistic: Callable, confidence: float, bca: bool
) -> tuple[float, float]:
    """The bootstrap interval with numpy alone (the arrays resampled together, as scipy's
    ``paired``): the percentile interval, BCa-corrected when ``bca`` (bias z0 from the share of
    resamples below the estimate, acceleration from the jackknife; Efron & Tibshirani ch. 14)."""
    n = data[0].size
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, n, size=(RESAMPLES, n))
    theta_b = statistic(*(d[idx] for d in data), axis=-1)
    alpha = (1.0 - confidence) / 2.0
    levels = np.array([alpha, 1.0 - alpha])
    if bca:
        theta = statistic(*data, axis=-1)
        share = (np.sum(theta_b < theta) + np.sum(theta_b <= theta)) / (2.0 * RESAMPLES)
        z0 = norm_ppf(min(max(share, 1e-12), 1 - 1e-12))
        keep = ~np.eye(n, dtype=bool)  # row i: every sample but the i-th
        jack = np.empty(n)
        step = max(1, 2_000_000 // max(n, 1))
        for i in range(0, n, step):
            rows = keep[i : i + step]
            jack[i : i + step] = statistic(
                *(np.broadcast_to(d, rows.shape)[rows].reshape(len(rows), n - 1) for d in data),
                axis=-1,
            )
        dev = jack.mean() - jack
        denom = 6.0 * np.sum(dev**2) ** 1.5
        acc = float(np.sum(dev**3) / denom) if denom > 0 else 0.0
        z = norm_ppf(levels)
        levels = norm_cdf(z0 + (z0 + z) / (1.0 - acc * (z0 + z)))
    low, high = np.percentile(theta_b, 100.0 * np.asarray(levels))
    return float(low), float(high)
