"""Intervals of rates (throughput, goodput, tokens/s) from the run's time structure.

A rate is a count over the run's duration D (first scheduled arrival → last finish, vLLM's
definition). If completions came as a Poisson process the count N would be Poisson(λD), and
Garwood's exact interval bounds λ: [χ²_{α/2}(2N)/2, χ²_{1−α/2}(2N + 2)/2] / D. Real completions
come in bursts (a micro-batch finishes several requests at once) or, in a closed loop, more evenly;
their dispersion φ = variance / mean of the count per window is measured by batch means: the span
from the first to the last completion split into k equal windows (Schmeiser 1982), φ = s²/x̄ of
the k window counts. The interval is then the quasi-Poisson one: Garwood's on N/φ events, times
φ. φ is never taken below its Poisson value (1 for requests; Σw²/Σw for events of weight w, a
request's tokens), so an evenly spaced run is not credited with a narrower interval than its count
alone supports, and the fill and drain at the ends of a run (no completions yet, or no more
arrivals) are left out of the dispersion, as they are structure, not noise.

k = round(√N), between 2 and 10; fewer than 2 events: open.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from harness.measure.intervals import Interval, open_interval
from harness.measure.special import chi2_ppf

MAX_WINDOWS = 10


def windows_for(count: float) -> int:
    """The number of batch-means windows for a rate resting on ``count`` events."""
    return int(min(MAX_WINDOWS, max(2, round(math.sqrt(max(count, 0.0))))))


def dispersion(times_s: np.ndarray, weights: np.ndarray) -> float:
    """φ = variance / mean of the weighted count per window over [first, last event] (batch
    means), at least the Poisson value Σw²/Σw."""
    total = float(weights.sum())
    floor = float(np.square(weights).sum()) / total if total > 0 else 1.0
    span = float(times_s.max() - times_s.min()) if times_s.size else 0.0
    k = windows_for(times_s.size)
    if times_s.size < 2 * k or not span > 0:
        return floor
    idx = np.clip(((times_s - times_s.min()) / span * k).astype(int), 0, k - 1)
    sums = np.bincount(idx, weights=weights, minlength=k)
    return max(floor, float(sums.var(ddof=1) / sums.mean()))


def garwood(count: float, confidence: float) -> tuple[float, float]:
    """Garwood's exact two-sided interval of a Poisson mean from an observed ``count`` (which may
    be non-integer: an effective count)."""
    alpha = 1.0 - confidence
    low = 0.0 if count <= 0 else chi2_ppf(alpha / 2.0, 2.0 * count) / 2.0
    high = chi2_ppf(1.0 - alpha / 2.0, 2.0 * count + 2.0) / 2.0
    return low, high


def rate_interval(
    times_s: Sequence[float],
    weights: Sequence[float] | None,
    start_s: float,
    end_s: float,
    confidence: float,
    n: int | None = None,
) -> Interval:
    """The interval of Σ weights / (end − start) (module docstring): events at ``times_s`` (a
    completion) each counting its weight (1 when None: requests). ``n``: what ``Interval.n``
    reports (default: the number of events)."""
    t = np.asarray(times_s, dtype=float)
    w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=float)
    count = int(t.size if n is None else n)
    span = end_s - start_s
    if t.size < 2 or not span > 0:
        return open_interval(confidence, "quasi-Poisson: fewer than 2 events", count)
    total = float(w.sum())
    phi = dispersion(t[w > 0], w[w > 0]) if total > 0 else 1.0
    low, high = garwood(total / phi, confidence)
    k = windows_for(t.size)
    method = f"quasi-Poisson, dispersion {phi:.3g} from batch means ({k} windows)"
    return Interval(low * phi / span, high * phi / span, confidence, method, count)
