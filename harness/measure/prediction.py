"""Prediction intervals from draws: where one more run will measure a metric (the forecast's).

Pure functions (numpy), no simulation. ``harness.predict.draws`` makes B draws of a metric, each
from a model drawn from the calibration's own sampling error and one simulated run of the forecast
workload with freshly resampled residuals; this module turns them into a prediction interval.

The interval is distribution-free, from order statistics: if the B draws and the run to come are
exchangeable (drawn from one distribution), the run's value falls below the l-th smallest draw
with probability l / (B + 1), so [X_(l), X_(u)] holds it with probability (u − l) / (B + 1)
(Wilks 1941; Hahn & Meeker, "Statistical Intervals", ch. 5). ``prediction_ranks`` takes the
symmetric pair l = k, u = B + 1 − k with the largest k for which that is ≥ the level; with fewer
than 2 / (1 − level) − 1 draws no pair reaches the level and the interval stays open (never a
narrow guess). ``draws_for(level)`` is the number of draws that puts k = 2 (two draws beyond each
end: an interval one outlying draw cannot set): 39 at 90 %, 79 at 95 %.

The point forecast (the mean over the simulator's replications) is kept inside the interval: an
end that lands short of it is moved to it, and the method says so.

Block bootstrap (``block_resample``): the calibration's requests and steps are a time series on a
shared host (slow and fast phases of minutes), not independent draws, so they are resampled in
blocks of consecutive units (Künsch 1989, the moving-block bootstrap), ⌈√n⌉ units long; the
resample keeps the serial correlation a unit-by-unit bootstrap would average away.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from harness.measure.intervals import Interval, open_interval

LEVEL = 0.90
BEYOND = 2  # draws beyond each end of a default interval


def prediction_ranks(draws: int, level: float) -> tuple[int, int] | None:
    """1-based ranks (l, u) of the order statistics whose span holds one more exchangeable draw
    with probability (u − l) / (draws + 1) ≥ ``level``; None when no pair reaches it."""
    k = math.floor((draws + 1) * (1.0 - level) / 2.0 + 1e-9)
    if k < 1:
        return None
    return k, draws + 1 - k


def coverage_of(draws: int, ranks: tuple[int, int]) -> float:
    """The probability that [X_(l), X_(u)] of ``draws`` draws holds one more."""
    return (ranks[1] - ranks[0]) / (draws + 1)


def end_confidence(draws: int, level: float) -> float:
    """The probability that one more exchangeable draw is not beyond one given end of the ``level``
    interval of ``draws`` draws: 1 − l / (draws + 1) (a run's one-sided ``confidence``: 0.95 for
    draws 2 and 38 of 39); (1 + level) / 2, the nominal, when no pair reaches the level."""
    ranks = prediction_ranks(draws, level)
    return (1.0 + level) / 2.0 if ranks is None else 1.0 - ranks[0] / (draws + 1)


def draws_for(level: float, beyond: int = BEYOND) -> int:
    """The fewest draws whose ``level`` interval has ``beyond`` draws outside each end."""
    return math.ceil(2 * beyond / (1.0 - level) - 1e-9) - 1


def band(values: Sequence[float | None], point: float | None, level: float) -> Interval:
    """The ``level`` prediction interval of ``values`` (the draws; None or NaN: a draw that
    measured nothing, left out), holding ``point``."""
    v = np.sort(np.asarray([x for x in values if x is not None and x == x], dtype=float))
    ranks = prediction_ranks(v.size, level)
    if ranks is None:
        return open_interval(
            level, f"prediction interval: {v.size} draws, {draws_for(level, 1)} needed", v.size
        )
    low, high = float(v[ranks[0] - 1]), float(v[ranks[1] - 1])
    method = f"prediction interval: draws {ranks[0]} and {ranks[1]} of {v.size} in order"
    if point is not None and point == point and not low <= point <= high:
        low, high = min(low, point), max(high, point)
        method += ", widened to the point forecast"
    return Interval(low, high, level, method, int(v.size))


def half_width(iv: Interval | dict, point: float | None) -> float | None:
    """Half the interval's width relative to the point forecast (0.25: ±25 %); None when the
    interval is open or the point is 0 or missing."""
    low, high = (iv.get("low"), iv.get("high")) if isinstance(iv, dict) else (iv.low, iv.high)
    if low is None or high is None or not point:
        return None
    return (high - low) / 2.0 / abs(point)


def inside(iv: Interval | dict | None, value: float | None) -> bool | None:
    """Whether ``value`` lies in the interval; None when either is missing or the interval is
    open on the side that would decide it."""
    if iv is None or value is None or value != value:
        return None
    low, high = (iv.get("low"), iv.get("high")) if isinstance(iv, dict) else (iv.low, iv.high)
    if low is not None and value < low:
        return False
    if high is not None and value > high:
        return False
    if low is None or high is None:
        return None
    return True


def block_length(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def block_resample(n: int, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
    """Indices 0..n−1 resampled in blocks of ``length`` consecutive indices (moving blocks, start
    drawn uniformly among the n − length + 1 possible), n of them."""
    if n <= 0:
        return np.zeros(0, dtype=int)
    length = min(n, length or block_length(n))
    starts = rng.integers(0, n - length + 1, size=math.ceil(n / length))
    return (starts[:, None] + np.arange(length)[None, :]).ravel()[:n]
