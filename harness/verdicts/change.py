"""How sure a change between two runs is: the interval of a metric's relative change, and the row
verdict it supports.

Interval of the change (BASE b → NEW n, relative change n/b − 1), at confidence c:

* from the per-request samples of both runs (``harness.measure.metric_intervals``: order
  statistics for percentiles, the bootstrap by request for means, quasi-Poisson batch means for
  rates), each run's interval at c combined by MOVER (Zou & Donner 2008, "Construction of
  confidence limits about effect measures"): on the log scale, d = ln n − ln b,
  L = d − √((ln n − ln l_n)² + (ln u_b − ln b)²), U = d + √((ln u_n − ln n)² + (ln b − ln l_b)²),
  l and u each run's bounds (the linear difference when a value or bound is ≤ 0). An open bound
  leaves that side open.
* from a history of k ≥ 3 earlier runs of the same spec (the run-to-run variation, which on a
  shared machine exceeds the within-run one): m and s = the mean and standard deviation of
  ln(metric) over them; NEW against the runs before it is ln n − m ± t_{k−1,(1+c)/2}·s·√(1 + 1/k)
  (the prediction interval of one more run: the noise band ``harness history`` shows). The union
  of the two intervals is kept: a change is called only when it shows both against BASE and
  against the history's typical run, so an outlier BASE (a quiet night) does not make an ordinary
  NEW a regression.

Row verdict, threshold T % and an absolute floor F (the smallest change that matters, in the
metric's unit), for a metric where lower is better (mirrored where higher is better):
``regression`` when the interval's lower end is above +T % AND the change it implies, b·L, is above
F; ``improved`` when its upper end is below −T % and b·|U| is above F; ``same`` when the interval
lies within ±T %, or the whole change it allows is within ±F; ``inconclusive`` otherwise (a row
with no interval at all, e.g. the bubble ratio without a history: ``same`` when its point change
is within ±T %, else ``inconclusive``, never a regression). So a
change is called only when it is beyond the threshold with confidence, and tiny absolute changes
(a queue p99 of 33 vs 48 ms in a 2-second E2E) never decide alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from harness.measure.special import t_ppf

LOWER, HIGHER, INFO = "lower", "higher", "info"
MIN_HISTORY = 3
NO_INTERVAL = "no interval (no per-request samples, no history)"


@dataclass(frozen=True)
class Change:
    """The relative change (%) and its interval (None: open on that side); ``basis`` says what
    the interval rests on."""

    pct: float | None
    low_pct: float | None
    high_pct: float | None
    basis: str


def _log_ok(*xs: float | None) -> bool:
    return all(x is None or x > 0 for x in xs)


def mover(
    b: float, b_low: float | None, b_high: float | None,
    n: float, n_low: float | None, n_high: float | None,
) -> tuple[float | None, float | None]:  # fmt: skip
    """MOVER interval of n/b − 1 (module docstring) from each run's estimate and bounds."""
    if _log_ok(b, b_low, b_high, n, n_low, n_high):
        f, d = math.log, math.log(n) - math.log(b)
        lo = (
            None
            if n_low is None or b_high is None
            else d - math.hypot(f(n) - f(n_low), f(b_high) - f(b))
        )
        hi = (
            None
            if n_high is None or b_low is None
            else d + math.hypot(f(n_high) - f(n), f(b) - f(b_low))
        )
        return (None if lo is None else math.expm1(lo), None if hi is None else math.expm1(hi))
    d = n - b
    lo = None if n_low is None or b_high is None else d - math.hypot(n - n_low, b_high - b)
    hi = None if n_high is None or b_low is None else d + math.hypot(n_high - n, b - b_low)
    scale = abs(b)
    return (None if lo is None else lo / scale, None if hi is None else hi / scale)


def log_spread(values: Sequence[float]) -> tuple[float, float, int] | None:
    """(mean, standard deviation (ddof 1), k) of ln(value) over k ≥ ``MIN_HISTORY`` runs' values;
    None with fewer, or with a value ≤ 0."""
    xs = [float(v) for v in values if v is not None]
    if len(xs) < MIN_HISTORY or any(v <= 0 for v in xs):
        return None
    logs = [math.log(v) for v in xs]
    mean = sum(logs) / len(logs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1)), len(logs)


def noise_band(values: Sequence[float], confidence: float) -> tuple[float, float, float] | None:
    """Where one more run of the same system falls with probability ``confidence``, from k earlier
    runs (a prediction interval on the log scale): (geometric mean, low, high) =
    exp(m), exp(m ∓ t_{k−1,(1+c)/2}·s·√(1 + 1/k)); None with fewer than ``MIN_HISTORY`` runs."""
    spread = log_spread(values)
    if spread is None:
        return None
    m, s, k = spread
    half = float(t_ppf(0.5 + confidence / 2.0, k - 1) * s * math.sqrt(1.0 + 1.0 / k))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def runs_interval(
    base_runs: Sequence[float], new_runs: Sequence[float], confidence: float
) -> tuple[float, float] | None:
    """The interval of the relative change between the geometric means of two sets of runs (at
    least one of them repeats), from the run-to-run variation on the log scale: with k_b, k_n ≥ 2
    Welch's t, d ± t_ν·√(s_b²/k_b + s_n²/k_n); against a single run, that run is one more draw
    of the same spread, d ± t_{k−1}·s·√(1/k + 1) (the noise band). None: no spread to use, or a
    value ≤ 0."""
    b = [float(v) for v in base_runs if v is not None]
    n = [float(v) for v in new_runs if v is not None]
    if not b or not n or max(len(b), len(n)) < 2 or min(b + n) <= 0:
        return None
    lb, ln = [math.log(v) for v in b], [math.log(v) for v in n]
    mb, mn = sum(lb) / len(lb), sum(ln) / len(ln)

    def var(xs: list[float], m: float) -> float:
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    d = mn - mb
    if len(b) >= 2 and len(n) >= 2:
        vb, vn = var(lb, mb) / len(lb), var(ln, mn) / len(ln)
        se = math.sqrt(vb + vn)
        df = (vb + vn) ** 2 / (
            (vb**2 / (len(lb) - 1) if vb else 0.0) + (vn**2 / (len(ln) - 1) if vn else 0.0) or 1.0
        )
        df = max(1.0, min(df, len(lb) + len(ln) - 2))
    else:
        many, m = (lb, mb) if len(lb) >= 2 else (ln, mn)
        se, df = math.sqrt(var(many, m) * (1.0 / len(many) + 1.0)), len(many) - 1
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    return math.expm1(d - half), math.expm1(d + half)


def _around(x: float, bounds: tuple[float | None, float | None]):
    """Bounds that hold their estimate (a summary's value and its samples' interval agree by
    construction; an edited or imported summary may not)."""
    lo, hi = bounds
    return (None if lo is None else min(lo, x), None if hi is None else max(hi, x))


def change(
    b: float | None,
    n: float | None,
    b_bounds: tuple[float | None, float | None] | None,
    n_bounds: tuple[float | None, float | None] | None,
    history: Sequence[float] = (),
    confidence: float = 0.95,
    runs: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Change:
    """The change from b to n with its interval from the samples' bounds, the history and/or the
    runs of repeats folders (``runs``: each side's values, one per run)."""
    if b is None or n is None:
        return Change(None, None, None, "missing")
    if b == 0:
        return Change(0.0 if n == 0 else None, None, None, "base is 0")
    pct = (n - b) / abs(b) * 100.0
    lows, highs, basis = [], [], []
    if b_bounds is not None and n_bounds is not None:
        lo, hi = mover(b, *_around(b, b_bounds), n, *_around(n, n_bounds))
        lows.append(lo)
        highs.append(hi)
        basis.append("per-request samples")
    band = noise_band(history, confidence)
    if band is not None and n > 0:
        center, low, high = band
        lows.append(n / high - 1.0)
        highs.append(n / low - 1.0)
        basis.append(f"history of {len([v for v in history if v is not None])} runs")
    across = runs_interval(*runs, confidence) if runs is not None else None
    if across is not None:
        lows.append(across[0])
        highs.append(across[1])
        basis.append(f"run-to-run variation of {len(runs[0])} + {len(runs[1])} runs")
    if not basis:
        return Change(pct, None, None, NO_INTERVAL)
    low = None if None in lows else min(lows) * 100.0
    high = None if None in highs else max(highs) * 100.0
    return Change(pct, low, high, " + ".join(basis))


def row_verdict(
    better: str, base: float | None, ch: Change, threshold_pct: float, floor: float = 0.0
) -> str:
    """regression / improved / same / inconclusive / n/a / info (module docstring)."""
    if better == INFO:
        return "info"
    if ch.pct is None:
        return "n/a"
    if ch.basis == NO_INTERVAL:  # the point alone never calls a change; within T it is "same"
        return "same" if abs(ch.pct) <= threshold_pct else "inconclusive"
    sign = 1.0 if better == LOWER else -1.0  # worse = positive after the sign
    lo, hi = ch.low_pct, ch.high_pct
    if sign < 0:
        lo, hi = (None if hi is None else -hi), (None if lo is None else -lo)
    size = abs(base or 0.0) / 100.0  # % → the metric's unit

    def beyond(x: float | None) -> bool:  # x: a worse-positive change (%) past T and the floor
        return x is not None and x > threshold_pct and (floor <= 0 or x * size > floor)

    if beyond(lo):
        return "regression"
    if hi is not None and beyond(-hi):
        return "improved"
    if lo is not None and hi is not None:
        if lo >= -threshold_pct and hi <= threshold_pct:
            return "same"
        if floor > 0 and max(abs(lo), abs(hi)) * size <= floor:
            return "same"
    return "inconclusive"


def suspected(better: str, base: float | None, ch: Change, threshold_pct: float, floor: float):
    """The point change alone is worse than the threshold and the floor (a regression the
    interval could not confirm)."""
    if better == INFO or ch.pct is None:
        return False
    worse = ch.pct if better == LOWER else -ch.pct
    return worse > threshold_pct and (floor <= 0 or worse * abs(base or 0.0) / 100.0 > floor)
