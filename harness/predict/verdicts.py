"""A forecast's SLO verdicts, three-valued from its prediction intervals.

Each target whose metric has a prediction interval (``intervals.metrics[key]``,
``harness.measure.prediction``: where one run of the workload will measure it) is judged on the
whole interval, by the rule a measured run's mean and rate targets use
(``harness.measure.slo_verdicts.from_bounds``): PASS when the interval lies on the target's good
side (``<=``: its high end at or under the limit: "interval below the limit"), FAIL when it lies on
the bad side ("interval above the limit"), INCONCLUSIVE when it straddles the limit (the forecast
cannot say which side the run will land on) or is open on the side that decides. The ends of a
``level`` interval are one-sided bounds at (1 + level)/2 (``end_confidence``: 0.95 for 39 draws at
90 %), the row's ``confidence`` as in a run's rows.

Without an interval (``--draws 0``, or a metric the draws did not cover) the target keeps the
point verdict (the point forecast against the target, ``harness.spec.slo.met``), marked
``basis: "point"`` and said so in its rule: it states no certainty. UNMEASURED: no value.

The rows are a run's ``slo`` rows (``SloVerdict.to_row``) plus ``basis`` ("interval" | "point");
``measured`` is the point forecast, ``low``/``high`` the interval, ``n`` its draws, and
``more_requests`` None (a forecast is not made more certain by more requests). The overall verdict
is the run's rule (``harness.measure.slo_verdicts.overall``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from harness.measure.intervals import FAIL, PASS, UNMEASURED, Interval
from harness.measure.prediction import end_confidence
from harness.measure.slo_verdicts import SloVerdict, from_bounds, overall
from harness.spec.slo import SloTarget, margin_pct, met

INTERVAL, POINT = "interval", "point"
NO_DRAWS = "no prediction intervals (--draws 0)"
NO_INTERVAL = "no prediction interval for this metric"


def _where(t: SloTarget, verdict: str, iv: Interval) -> str:
    """The rule's words: where the interval lies against the limit."""
    if verdict == PASS:
        word = "below" if t.op == "<=" else "above"
    elif verdict == FAIL:
        word = "above" if t.op == "<=" else "below"
    elif (iv.high if t.op == "<=" else iv.low) is None:
        return f"open at the end that decides (limit {t.value:g})"
    else:
        word = "straddles"
    return f"{word} the limit {t.value:g}"


def _on_interval(t: SloTarget, point: float, iv: dict) -> SloVerdict:
    level = float(iv.get("confidence") or 0.0)
    n = int(iv.get("n") or 0)
    interval = Interval(iv.get("low"), iv.get("high"), level, str(iv.get("method") or ""), n)
    verdict = from_bounds(t, interval)
    how = interval.method.removeprefix("prediction interval: ")
    rule = f"interval {_where(t, verdict, interval)} ({level * 100:g} % prediction interval, {how})"
    return SloVerdict(
        t,
        point,
        verdict,
        margin_pct(t, point),
        interval.low,
        interval.high,
        end_confidence(n, level),
        rule,
        n,
        basis=INTERVAL,
    )


def judge_one(t: SloTarget, metrics: Mapping, intervals: Mapping | None) -> SloVerdict:
    """One target's verdict (module docstring); ``intervals``: the forecast's ``intervals`` block
    (None: made without draws)."""
    v = metrics.get(t.summary_key)
    if v is None:
        return SloVerdict(t, None, UNMEASURED, None, None, None, None, "no value", 0)
    point = float(v)
    iv = ((intervals or {}).get("metrics") or {}).get(t.summary_key)
    if iv:
        return _on_interval(t, point, iv)
    why = NO_INTERVAL if intervals else NO_DRAWS
    verdict = PASS if met(t, point) else FAIL
    rule = f"point forecast only, {why}: it states no certainty"
    return SloVerdict(
        t, point, verdict, margin_pct(t, point), None, None, None, rule, 0, basis=POINT
    )


def judge_forecast(
    targets: Sequence[SloTarget], metrics: Mapping, intervals: Mapping | None
) -> list[SloVerdict]:
    return [judge_one(t, metrics, intervals) for t in targets]


def basis_of(verdicts: Sequence[SloVerdict]) -> str | None:
    """What the verdicts rest on: "interval" when every judged target on its interval, "point" when
    every one on the point alone, "mixed" otherwise; None when none was judged."""
    found = {v.basis for v in verdicts if v.basis}
    if not found:
        return None
    return found.pop() if len(found) == 1 else "mixed"


def forecast_slo(
    targets: Sequence[SloTarget], metrics: Mapping, intervals: Mapping | None = None
) -> dict:
    """The forecast's ``slo`` rows, ``verdict`` (the run's overall rule) and ``verdict_basis``."""
    verdicts = judge_forecast(targets, metrics, intervals)
    return {
        "slo": [v.to_row() for v in verdicts],
        "verdict": overall(verdicts),
        "verdict_basis": basis_of(verdicts),
    }
