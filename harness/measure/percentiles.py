"""Sample statistics of latencies: percentiles (numpy's linear interpolation, as ``vllm bench
serve``), the mean/median/std/percentile block of the summary, a running p99."""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence

# ---------------------------------------------------------------- statistics

STAT_NAMES = ("mean", "median", "std", "p50", "p90", "p95", "p99")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def percentile(values: Sequence[float], q: float) -> float | None:
    """q-th percentile (0 ≤ q ≤ 100) with linear interpolation, numpy's default method:
    sorted x, h = (N − 1)·q/100, result = x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
    None for an empty input."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    xs = sorted(values)
    return _percentile_sorted(xs, q)


def _percentile_sorted(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def stats(values: Iterable[float]) -> dict[str, float | None]:
    """mean, median, std (population, ddof=0, as numpy.std), p50, p90, p95, p99.
    Every value is None for an empty input."""
    xs = sorted(values)
    if not xs:
        return {name: None for name in STAT_NAMES}
    n = len(xs)
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / n
    out: dict[str, float | None] = {
        "mean": mean,
        "median": _percentile_sorted(xs, 50.0),
        "std": math.sqrt(var),
    }
    for name, q in PERCENTILES.items():
        out[name] = _percentile_sorted(xs, q)
    return out


def running_p99(values: Iterable[float]) -> list[float]:
    """Element i is the p99 of values[0..i] (what a live progress line shows after the
    (i+1)-th value); same interpolation as :func:`percentile`."""
    seen: list[float] = []
    out: list[float] = []
    for v in values:
        bisect.insort(seen, v)
        out.append(_percentile_sorted(seen, 99.0))  # type: ignore[arg-type]
    return out


def lower_rank_percentile(values: Sequence[float], q: float) -> float | None:
    """MLPerf LoadGen's percentile (loadgen/results.cc): no interpolation, the sorted sample at
    index ⌊N·p⌋, p = q/100 as LoadGen's double (0.99 · N, not 99 · N / 100: the two round
    apart for some N). None for an empty input."""
    if not 0.0 <= q < 100.0:
        raise ValueError(f"LoadGen's percentile q must be within [0, 100), got {q}")
    xs = sorted(values)
    return xs[int(len(xs) * (q / 100.0))] if xs else None


def inverse_cdf_percentile(values: Sequence[float], q: float) -> float | None:
    """guidellm's percentile (guidellm 0.8 ``Percentiles.from_pdf``): the smallest value whose
    cumulative share of the samples reaches q/100 (equal weights, equal values merged, the shares
    summed left to right in floating point as numpy's cumsum does). None for an empty input."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    xs = sorted(values)
    if not xs:
        return None
    uniq: list[float] = []
    counts: list[int] = []
    for x in xs:
        if uniq and x == uniq[-1]:
            counts[-1] += 1
        else:
            uniq.append(x)
            counts.append(1)
    total = float(len(xs))
    cdf = 0.0
    for x, c in zip(uniq, counts):
        cdf += c / total
        if cdf >= q / 100.0:
            return x
    return uniq[-1]
