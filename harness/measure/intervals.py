"""Confidence intervals of percentiles, and the binomial decision of a percentile target.

Pure functions (numpy; special functions from ``harness.measure.special``), no I/O. An
:class:`Interval` bound is None where the data bound nothing on that side: a small sample gives an
open-ended interval, never a narrow guess.

Percentiles: distribution-free, from order statistics. For n independent samples of a continuous
distribution, the number of them at or below the true q-quantile ξ is Binomial(n, q), so
P(X_(l) ≤ ξ ≤ X_(u)) = P(l ≤ B ≤ u − 1), B ~ Binomial(n, q). The two-sided interval at confidence c
takes the largest l with P(B ≤ l − 1) ≤ (1 − c)/2 and the smallest u with P(B ≥ u) ≤ (1 − c)/2;
coverage ≥ c for every continuous distribution (Hahn & Meeker, "Statistical Intervals", ch. 5).
No such l (u) exists when n is small: that side stays open.

Percentile targets ("p99_ttft_ms <= 2000"), MLPerf LoadGen's early-stopping rule
(loadgen/early_stopping.cc): of n requests, t were over the limit. If the true fraction over the
limit were 1 − q or more (the target missed), t or fewer would happen with probability at most
P(Binomial(n, 1 − q) ≤ t) = I_q(n − t, t + 1) (the regularized incomplete beta function). PASS when
that is ≤ 1 − c. Symmetrically FAIL when P(Binomial(n, 1 − q) ≥ t) ≤ 1 − c: even at exactly the
limit's fraction, t or more requests over it would be that unlikely. Otherwise INCONCLUSIVE.
LoadGen uses c = 0.99 and reports PASS or "run more queries"; FAIL is the same test the other way.
PASS ⇔ the one-sided upper order-statistic bound at c is ≤ the limit (the same binomial, read from
the other side), so the verdict and the bounds the SLO table shows never disagree.

Samples that are not independent (ITL gaps of one request move together) enter with an effective
sample size n_eff = n / deff, deff ≥ 1 the design effect of the fraction below the sample quantile
estimated between requests (Kish; Woodruff's interval for clustered samples).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from harness.measure import special

PASS, FAIL, INCONCLUSIVE, UNMEASURED = "PASS", "FAIL", "INCONCLUSIVE", "UNMEASURED"
# No run is made of more requests than this; a count beyond it decides nothing practical.
MAX_REQUESTS_TO_DECIDE = 10**9


@dataclass(frozen=True)
class Interval:
    """A confidence interval of one statistic: [low, high] at ``confidence``; None: open on that
    side (the data bound nothing there). ``n``: the samples (requests) it rests on."""

    low: float | None
    high: float | None
    confidence: float
    method: str
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (s → ms: 1e3)."""
        mul = lambda v: None if v is None else v * factor  # noqa: E731
        return Interval(mul(self.low), mul(self.high), self.confidence, self.method, self.n)


def open_interval(confidence: float, method: str, n: int) -> Interval:
    return Interval(None, None, confidence, method, n)


# ---------------------------------------------------------------- the binomial


def binom_le(k: float, n: float, p: float) -> float:
    """P(Binomial(n, p) ≤ k) = I_{1−p}(n − k, k + 1); n and k may be non-integer (an effective
    sample size), as LoadGen's BetaRegularized form allows."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(special.betainc(n - k, k + 1.0, 1.0 - p))


def binom_ge(k: float, n: float, p: float) -> float:
    """P(Binomial(n, p) ≥ k) = I_p(k, n − k + 1)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(special.betainc(k, n - k + 1.0, p))


def _cdf_table(n: int, q: float) -> np.ndarray:
    """P(Binomial(n, q) ≤ j) for j = 0 … n."""
    return special.binom_cdf_table(n, q)


def order_ranks(n: int, q: float, tail: float) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) of the order statistics bounding the q-quantile of n samples, each side
    missing it with probability ≤ ``tail``; None where no rank does (that side is open)."""
    if n < 1:
        return None, None
    cdf = _cdf_table(n, q)
    # l − 1 = the largest j with P(B ≤ j) ≤ tail; l = j + 1
    below = np.nonzero(cdf <= tail)[0]
    low = int(below[-1]) + 1 if below.size else None
    # u − 1 = the smallest j with P(B ≤ j) ≥ 1 − tail; u = j + 1 (≤ n, or open)
    above = np.nonzero(cdf >= 1.0 - tail)[0]
    high = int(above[0]) + 1 if above.size and above[0] + 1 <= n else None
    return low, high


def quantile_interval(
    values: Sequence[float] | np.ndarray,
    q: float,
    confidence: float,
    deff: float = 1.0,
    n_units: int | None = None,
) -> Interval:
    """Distribution-free interval of the q-quantile (0 < q < 1) of ``values`` (see the module
    docstring). ``deff`` > 1: correlated samples, ranks taken on n_eff = n / deff and mapped
    back onto the n pooled values; ``n_units``: what ``Interval.n`` reports (requests, for
    pooled ITL)."""
    xs = np.sort(np.asarray(values, dtype=float))
    n = xs.size
    label = "order statistics" if deff <= 1.0 else f"order statistics, design effect {deff:.2g}"
    units = n if n_units is None else n_units
    n_eff = int(math.floor(n / max(deff, 1.0)))
    low_r, high_r = order_ranks(n_eff, q, (1.0 - confidence) / 2.0)
    scale = n / n_eff if n_eff else 1.0
    low = None if low_r is None else float(xs[max(0, math.floor(low_r * scale) - 1)])
    high = None if high_r is None else float(xs[min(n - 1, math.ceil(high_r * scale) - 1)])
    return Interval(low, high, confidence, label, units)


def indicator_design_effect(indicators: Sequence[np.ndarray]) -> float:
    """Kish's design effect of a pooled 0/1 fraction whose values come in units (requests) that
    move together: the ratio estimator's variance between units, k/(k − 1)·Σ(a_i − f·m_i)²/N², over
    the binomial f(1 − f)/N (a_i: ones in unit i of m_i values, N = Σ m_i, f = Σ a_i / N); ≥ 1,
    about 1 for independent values; 1 when f is 0 or 1 (nothing to estimate it from)."""
    units = [np.asarray(u, dtype=float) for u in indicators if len(u)]
    if len(units) < 2:
        return 1.0
    a = np.array([u.sum() for u in units])
    m = np.array([u.size for u in units], dtype=float)
    k, total = len(units), m.sum()
    f = a.sum() / total
    if f <= 0.0 or f >= 1.0:
        return 1.0
    var_cluster = k / (k - 1) * np.sum((a - f * m) ** 2) / total**2
    return max(1.0, float(var_cluster / (f * (1 - f) / total)))


def design_effect(values_by_unit: Sequence[np.ndarray], q: float) -> float:
    """The design effect (:func:`indicator_design_effect`) of the fraction of pooled values at or
    below their q-quantile."""
    units = [np.asarray(u, dtype=float) for u in values_by_unit if len(u)]
    if len(units) < 2:
        return 1.0
    x = float(np.quantile(np.concatenate(units), q))
    return indicator_design_effect([u <= x for u in units])


# ---------------------------------------------------------------- percentile targets


@dataclass(frozen=True)
class Decision:
    """A percentile target decided from counts: ``over`` of ``n`` samples above the limit
    (effective counts when the samples are correlated). ``more``: requests beyond ``n`` that
    would decide it if they went over the limit at the observed rate (0 when decided; None when
    no count would, the observed rate being exactly the limit's)."""

    verdict: str
    n: float
    over: float
    q: float
    confidence: float
    p_pass: float  # P(Binomial(n, 1 − q) ≤ over): PASS when ≤ 1 − confidence
    p_fail: float  # P(Binomial(n, 1 − q) ≥ over): FAIL when ≤ 1 − confidence
    more: int | None


def _verdict(n: float, over: float, q: float, confidence: float) -> tuple[str, float, float]:
    p_pass = binom_le(over, n, 1.0 - q)
    p_fail = binom_ge(over, n, 1.0 - q)
    alpha = 1.0 - confidence
    if p_pass <= alpha:
        return PASS, p_pass, p_fail
    if p_fail <= alpha:
        return FAIL, p_pass, p_fail
    return INCONCLUSIVE, p_pass, p_fail


def decide_quantile(n: float, over: float, q: float, confidence: float) -> Decision:
    """LoadGen's early-stopping decision of "the q-quantile is ≤ limit" from ``over`` of ``n``
    samples above the limit, at ``confidence`` (module docstring), and the requests more that
    would decide it at the observed rate over/n (:func:`more_to_decide`)."""
    if n <= 0:
        return Decision(UNMEASURED, n, over, q, confidence, 1.0, 1.0, None)
    verdict, p_pass, p_fail = _verdict(n, over, q, confidence)
    more = 0 if verdict != INCONCLUSIVE else more_to_decide(n, over, q, confidence)
    return Decision(verdict, n, over, q, confidence, p_pass, p_fail, more)


def more_to_decide(n: float, over: float, q: float, confidence: float) -> int | None:
    """The fewest samples beyond n that decide the target when the extra ones go over the limit at
    the observed rate r = over/n (over + r·m of n + m): PASS when r < 1 − q, FAIL when r > 1 − q;
    None when r = 1 − q or no count up to ``MAX_REQUESTS_TO_DECIDE`` does. With r = 0 this is
    LoadGen's "run at least h more queries": ⌈ln(1 − c)/ln q⌉ − n."""
    r = over / n
    if math.isclose(r, 1.0 - q, rel_tol=1e-12):
        return None

    def decided(m: int) -> bool:
        return _verdict(n + m, over + r * m, q, confidence)[0] != INCONCLUSIVE

    hi = 1
    while not decided(hi):
        hi *= 2
        if hi > MAX_REQUESTS_TO_DECIDE:
            return None
    lo = hi // 2  # undecided at lo (or lo == 0), decided at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi
