"""Repeats (``harness run --repeats N``): N runs of one spec summarised across runs, and the SLO
verdicts that rest on the run-to-run variation.

Each run is a normal run directory (``run-01`` …) under one parent that also holds
``repeats.json`` (:func:`repeats_summary`) and ``report.md``. Pure functions of the runs'
summaries; nothing here reads a table.

Across runs, for every numeric key of ``summary.metrics`` that every complete run has (k runs,
values v_1 … v_k): the mean and its interval at confidence c, mean ± t_{k−1,(1+c)/2}·s/√k (a run is
one draw of the system: on a shared machine a run's load is part of what is measured), the
run-to-run standard deviation s (and s/mean in %), and beside it the within-run spread: the mean
over runs of each run's own interval half-width divided by z_{(1+c)/2} (a standard error), in % of
the value. Run-to-run well above within-run: the runs differ by more than their sampling does.

SLO verdict across repeats, for a target on statistic X (``p99_ttft_ms <= 2000``): one-sided at c on
the mean over runs of X, mean ± t_{k−1,c}·s/√k: PASS when the bound on the bad side is on the good
side of the limit, FAIL when the bound on the good side is on the bad side, INCONCLUSIVE otherwise
(and with fewer than 2 complete runs: no spread to judge from). It states "the run's X, averaged
over runs of this system, meets the limit", which holds the run-to-run variation that one run's
verdict cannot see; each run's own verdict is listed beside it. A percentile of a run's few
requests is a biased estimate of the quantile (the p99 of 8 requests is nearly their maximum), so
for a percentile target the mean over runs must agree with the binomial rule (MLPerf LoadGen's, as
for one run) on every run's requests pooled, from the counts in the runs' SLO rows: PASS only when
both say PASS, FAIL only when both say FAIL (ITL targets, whose counts are gaps, are not pooled).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from harness.measure.intervals import FAIL, INCONCLUSIVE, PASS, decide_quantile
from harness.measure.percentiles import PERCENTILES
from harness.measure.slo_verdicts import overall
from harness.measure.special import norm_ppf, t_ppf
from harness.results.reader import as_number
from harness.spec.slo import resolve_targets

REPEATS_FILE = "repeats.json"


def _mean_sd(xs: Sequence[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _within_sd_pct(summary: Mapping, key: str, value: float, confidence: float) -> float | None:
    """One run's own standard error of ``key`` in % of its value, from its interval's half-width
    (``summary.intervals``); None when open or absent."""
    block = summary.get("intervals") or {}
    iv = (block.get("metrics") or {}).get(key) or {}
    lo, hi, c = as_number(iv.get("low")), as_number(iv.get("high")), iv.get("confidence")
    if lo is None or hi is None or not value:
        return None
    z = float(norm_ppf(0.5 + float(c or confidence) / 2.0))
    return (hi - lo) / 2.0 / z / abs(value) * 100.0


def metric_across(
    summaries: Sequence[Mapping], key: str, confidence: float
) -> dict[str, Any] | None:
    """One metric over the runs (module docstring); None when a run lacks it."""
    values = [as_number((s.get("metrics") or {}).get(key)) for s in summaries]
    if not values or any(v is None for v in values):
        return None
    m, sd = _mean_sd(values)
    k = len(values)
    half = None if sd is None else t_ppf(0.5 + confidence / 2.0, k - 1) * sd / k**0.5
    within = [_within_sd_pct(s, key, v, confidence) for s, v in zip(summaries, values)]
    within = [w for w in within if w is not None]
    floor = 0.0 if min(values) >= 0 else -math.inf  # latencies, rates, counts: never below 0
    return {
        "values": values,
        "mean": m,
        "low": None if half is None else max(m - half, floor),
        "high": None if half is None else m + half,
        "run_to_run_sd": sd,
        "run_to_run_sd_pct": None if sd is None or not m else sd / abs(m) * 100.0,
        "within_run_sd_pct": sum(within) / len(within) if len(within) == len(values) else None,
    }


def _pooled(t, rows: Sequence[Mapping], confidence: float):
    """LoadGen's rule on every run's requests of a percentile target, from the rows' n and over;
    None for other targets, ITL, or rows without counts."""
    if not t.is_latency or t.stat in ("mean", "std") or t.metric == "itl":
        return None
    counts = [(as_number(r.get("n")), as_number(r.get("over"))) for r in rows]
    if not counts or any(n is None or o is None for n, o in counts):
        return None
    n, over = sum(c[0] for c in counts), sum(c[1] for c in counts)
    q = PERCENTILES["p50" if t.stat == "median" else t.stat] / 100.0
    return decide_quantile(n, over, q, confidence)


def verdict_across(
    text: str, values: Sequence[float | None], confidence: float, rows: Sequence[Mapping] = ()
) -> dict:
    """The SLO verdict of one target across runs (module docstring); ``rows``: the target's SLO
    row of each run (their counts pool a percentile target's requests)."""
    (t,) = resolve_targets(None, [text])
    xs = [v for v in values if v is not None]
    row = {"target": text, "values": list(values), "confidence": confidence}
    if len(xs) < 2 or len(xs) < len(values):
        why = "fewer than 2 runs" if len(xs) < 2 else "a run has no value"
        return {**row, "verdict": INCONCLUSIVE, "low": None, "high": None, "rule": why}
    m, sd = _mean_sd(xs)
    half = t_ppf(confidence, len(xs) - 1) * sd / len(xs) ** 0.5
    low, high = max(m - half, 0.0) if min(xs) >= 0 else m - half, m + half
    good, bad = (high, low) if t.op == "<=" else (low, high)
    if good <= t.value if t.op == "<=" else good >= t.value:
        verdict = PASS
    elif bad > t.value if t.op == "<=" else bad < t.value:
        verdict = FAIL
    else:
        verdict = INCONCLUSIVE
    rule = (
        f"one-sided {confidence * 100:g} % bounds of the mean over {len(xs)} runs "
        f"(Student t, run-to-run sd {sd:.4g})"
    )
    pooled = _pooled(t, rows, confidence)
    if pooled is not None:
        rule += (
            f"; pooled binomial (LoadGen) {pooled.verdict}: {pooled.over:g} of {pooled.n:g} "
            f"requests over"
        )
        if pooled.verdict != verdict:
            verdict = INCONCLUSIVE
    return {**row, "measured": m, "verdict": verdict, "low": low, "high": high, "rule": rule}


def repeats_summary(
    summaries: Sequence[Mapping], run_dirs: Sequence[str], confidence: float, served_by: str
) -> dict:
    """``repeats.json``: every run (its directory, completeness, verdict), each metric across the
    complete runs, the SLO verdicts across them, and how the engine served the runs."""
    done = [s for s in summaries if s.get("complete")]
    keys = [
        k
        for k, v in ((done[0].get("metrics") or {}).items() if done else [])
        if as_number(v) is not None and not isinstance(v, bool)
    ]
    metrics = {k: m for k in keys if (m := metric_across(done, k, confidence)) is not None}
    targets = [r.get("target") for r in (done[0].get("slo") or [])] if done else []
    slo = []
    for text in targets:
        (t,) = resolve_targets(None, [text])
        values = [as_number((s.get("metrics") or {}).get(t.summary_key)) for s in done]
        rows = [next((r for r in s.get("slo") or [] if r.get("target") == text), {}) for s in done]
        row = verdict_across(text, values, confidence, rows)
        row["per_run"] = [r.get("verdict") for r in rows]
        slo.append(row)
    incomplete = len(done) < len(summaries)
    return {
        "name": (summaries[0].get("name") if summaries else None),
        "repeats": len(summaries),
        "complete_runs": len(done),
        "confidence": confidence,
        "served_by": served_by,
        "runs": [
            {
                "dir": d,
                "complete": bool(s.get("complete")),
                "verdict": s.get("verdict"),
                "incomplete_reason": s.get("incomplete_reason"),
            }
            for d, s in zip(run_dirs, summaries)
        ],
        "metrics": metrics,
        "slo": slo,
        "verdict": "INCOMPLETE" if incomplete else overall(slo),
    }


def geometric_means(summaries: Sequence[Mapping], section: str) -> dict[str, float]:
    """Each numeric key of ``section`` over the runs: the geometric mean (the arithmetic one where
    a value is ≤ 0): what ``harness compare`` shows for a repeats folder."""
    out: dict[str, float] = {}
    first = summaries[0].get(section) or {} if summaries else {}
    for key in first:
        xs = [as_number((s.get(section) or {}).get(key)) for s in summaries]
        if any(x is None for x in xs) or isinstance(first[key], bool):
            continue
        if all(x > 0 for x in xs):
            out[key] = math.exp(sum(math.log(x) for x in xs) / len(xs))
        else:
            out[key] = sum(xs) / len(xs)
    return out
