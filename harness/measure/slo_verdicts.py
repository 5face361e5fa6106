"""SLO verdicts that say how sure they are: PASS, FAIL or INCONCLUSIVE at a confidence level.

Every target is decided from the run's samples (``harness.measure.metric_intervals.Samples``) at
confidence c (``slo.confidence``, default 0.95), each verdict one-sided: PASS claims "the target
holds" and FAIL "it does not", each wrong with probability at most 1 − c.

* percentile targets (``p99_ttft_ms <= 2000``; ``median`` is p50): MLPerf LoadGen's early-stopping
  rule on the count of requests over the limit (``harness.measure.intervals.decide_quantile``).
  ITL gaps are pooled over requests: counts enter divided by their design effect.
* mean and std targets: the one-sided bounds of the BCa bootstrap interval (by request).
* rates (``request_throughput >= 8``): the one-sided bounds of the batch-means interval.
PASS when the bound on the bad side is on the good side of the target, FAIL when the bound on the
good side is on the bad side, INCONCLUSIVE otherwise. ``low``/``high`` of a verdict are those
one-sided bounds at c: together a two-sided interval at 2c − 1 (90 % at c = 0.95).

An INCONCLUSIVE verdict says how many more requests would decide it if the run went on as it
went: for a percentile, the exact count at the observed rate of requests over the limit; for a
mean or a rate, the count that shrinks the interval (∝ 1/√n) enough to clear the target.
UNMEASURED: the statistic has no value (no samples).

A sequential caller (a run that stops once every target is decided) calls :func:`judge_slo` at each
look with the confidence its stopping rule spends per look, and reads :func:`all_decided` and
:func:`more_requests`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from harness.measure.intervals import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    UNMEASURED,
    Interval,
    decide_quantile,
    design_effect,
    indicator_design_effect,
)
from harness.measure.metric_intervals import Samples, interval_of
from harness.measure.percentiles import PERCENTILES
from harness.measure.resample import MIN_SAMPLES
from harness.spec.slo import SloTarget, margin_pct

VERDICTS = (PASS, FAIL, INCONCLUSIVE, UNMEASURED)
_FAMILY = {"e2e": "e2el"}


@dataclass(frozen=True)
class SloVerdict:
    """One target's verdict. ``low``/``high``: the one-sided bounds at ``confidence`` (None: open);
    ``n`` requests it rests on; ``over``: requests (ITL: gaps) over the limit, for a percentile;
    ``more_requests``: more that would decide an INCONCLUSIVE one (None: none would, or unknown);
    ``basis``: a forecast's only (``harness.predict.verdicts``): "interval" or "point"."""

    target: SloTarget
    measured: float | None
    verdict: str
    margin_pct: float | None
    low: float | None
    high: float | None
    confidence: float | None  # None: a forecast's point verdict (harness.predict.verdicts)
    rule: str
    n: int
    over: int | None = None
    more_requests: int | None = None
    basis: str | None = None

    @property
    def passed(self) -> bool | None:
        """True for PASS, False for FAIL, None when undecided or unmeasured."""
        return {PASS: True, FAIL: False}.get(self.verdict)

    def to_row(self) -> dict:
        """The summary's ``slo`` row (a forecast's with its ``basis``)."""
        row = {
            "target": self.target.text,
            "measured": self.measured,
            "passed": self.passed,
            "margin_pct": self.margin_pct,
            "verdict": self.verdict,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "rule": self.rule,
            "n": self.n,
            "over": self.over,
            "more_requests": self.more_requests,
        }
        if self.basis is not None:
            row["basis"] = self.basis
        return row


def _pct(c: float) -> str:
    return f"{c * 100:g} %"


def from_bounds(t: SloTarget, iv: Interval) -> str:
    """PASS when the whole interval meets the target (``<=``: its high end at or under it), FAIL
    when the whole interval misses it (``<=``: its low end over it), else INCONCLUSIVE; an open
    end decides nothing."""
    good_bound, bad_bound = (iv.high, iv.low) if t.op == "<=" else (iv.low, iv.high)
    if good_bound is not None and (
        good_bound <= t.value if t.op == "<=" else good_bound >= t.value
    ):
        return PASS
    if bad_bound is not None and (bad_bound > t.value if t.op == "<=" else bad_bound < t.value):
        return FAIL
    return INCONCLUSIVE


def _more_from_width(t: SloTarget, point: float, iv: Interval, n: int) -> int | None:
    """Requests beyond n for the interval, shrinking as 1/√n about the same estimate, to clear
    the target (an approximation: the estimate itself moves)."""
    if point == t.value:
        return None
    toward_good = (point < t.value) == (t.op == "<=")
    if toward_good:  # the bound on the target's side must reach past it
        bound = iv.high if t.op == "<=" else iv.low
    else:
        bound = iv.low if t.op == "<=" else iv.high
    if bound is None:  # too few requests for an interval: at least enough for one
        return max(1, MIN_SAMPLES - n) if n < MIN_SAMPLES else None
    width, room = abs(bound - point), abs(t.value - point)
    need = math.ceil(n * (width / room) ** 2)
    return max(1, need - n)


def _percentile(t: SloTarget, samples: Samples, point: float, confidence: float) -> SloVerdict:
    family = _FAMILY.get(t.metric, t.metric)
    q = PERCENTILES["p50" if t.stat == "median" else t.stat] / 100.0
    values = samples.values[family]
    limit_s = t.value / 1e3
    over = int(np.count_nonzero(values > limit_s))
    n, itl = values.size, family == "itl"
    deff = 1.0
    if itl:  # gaps of one request move together: effective counts
        at_limit = [(g > limit_s).astype(float) for g in samples.itl_groups if g.size]
        deff = max(design_effect(samples.itl_groups, q), indicator_design_effect(at_limit))
    d = decide_quantile(n / deff, over / deff, q, confidence)
    bounds = interval_of(samples, t.summary_key, 2.0 * confidence - 1.0)
    more = d.more
    if more is not None and itl:
        more = math.ceil(more * deff / max(samples.gaps_per_request, 1.0))
    unit = "gaps" if itl else "requests"
    rule = (
        f"binomial (MLPerf LoadGen early stopping) at {_pct(confidence)}: {over} of {n} {unit} "
        f"over {t.value:g} ms"
        + (f", design effect {deff:.2g}" if itl else "")
        + f"; P(≤ {over} over | target missed) = {d.p_pass:.3g}"
    )
    return SloVerdict(
        t,
        point,
        d.verdict,
        margin_pct(t, point),
        bounds.low,
        bounds.high,
        confidence,
        rule,
        samples.requests if itl else n,
        over,
        more,
    )


def judge_one(
    t: SloTarget, metrics: Mapping, samples: Samples | None, confidence: float
) -> SloVerdict:
    """The verdict of one target (module docstring)."""
    v = metrics.get(t.summary_key)
    point = None if v is None else float(v)
    if point is None or samples is None:
        why = "no value" if point is None else "no samples to judge from"
        return SloVerdict(t, point, UNMEASURED, None, None, None, confidence, why, 0)
    if t.is_latency and t.stat not in ("mean", "std"):
        return _percentile(t, samples, point, confidence)
    iv = interval_of(samples, t.summary_key, 2.0 * confidence - 1.0)
    if iv is None:
        return SloVerdict(t, point, UNMEASURED, None, None, None, confidence, "no interval", 0)
    verdict = from_bounds(t, iv)
    more = _more_from_width(t, point, iv, iv.n) if verdict == INCONCLUSIVE else 0
    side = "upper" if t.op == "<=" else "lower"
    rule = f"one-sided {_pct(confidence)} {side} bound, {iv.method}, {iv.n} requests"
    return SloVerdict(
        t, point, verdict, margin_pct(t, point), iv.low, iv.high, confidence, rule, iv.n, None, more
    )


def judge_slo(
    targets: Sequence[SloTarget], metrics: Mapping, samples: Samples | None, confidence: float
) -> list[SloVerdict]:
    """Every target's verdict from the run's metrics and samples at ``confidence``."""
    return [judge_one(t, metrics, samples, confidence) for t in targets]


def overall(verdicts: Sequence[SloVerdict] | Sequence[Mapping]) -> str:
    """FAIL when any target failed; else INCONCLUSIVE when any is undecided; else UNMEASURED when
    any has no value (or there is no target); else PASS."""
    names = [v.verdict if isinstance(v, SloVerdict) else row_verdict(v) for v in verdicts]
    if FAIL in names:
        return FAIL
    if INCONCLUSIVE in names:
        return INCONCLUSIVE
    if not names or UNMEASURED in names:
        return UNMEASURED
    return PASS


def row_verdict(row: Mapping) -> str:
    """A summary ``slo`` row's verdict; rows written before verdicts had three values carry only
    ``passed``."""
    v = row.get("verdict")
    if v in VERDICTS:
        return v
    return {True: PASS, False: FAIL}.get(row.get("passed"), UNMEASURED)


def all_decided(verdicts: Sequence[SloVerdict]) -> bool:
    """Every target PASS or FAIL (a sequential run may stop)."""
    return all(v.verdict in (PASS, FAIL) for v in verdicts)


def more_requests(verdicts: Sequence[SloVerdict]) -> int | None:
    """The most requests any undecided target still needs at the observed rates (0 when all are
    decided; None when one of them cannot say)."""
    needs = [v.more_requests for v in verdicts if v.verdict == INCONCLUSIVE]
    if any(m is None for m in needs):
        return None
    return max(needs, default=0)
