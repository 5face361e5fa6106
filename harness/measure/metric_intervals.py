"""A confidence interval for every statistic of the summary's metric block, beside vLLM's keys.

``Samples`` holds what the intervals (and the SLO verdicts, ``harness.measure.slo_verdicts``)
rest on: the per-request values of each latency family, ITL gaps grouped by request, and the
completion times the rates are counted over. :func:`metric_intervals` gives, for every
``{mean,median,std,p50,p90,p95,p99}_{ttft,tpot,itl,e2el,queue}_ms`` key and the four rates, an
``Interval`` at the spec's confidence (``slo.confidence``, default 0.95):

* percentiles: order statistics (``harness.measure.intervals``), ITL with its design effect;
* mean and std: BCa bootstrap by request (``harness.measure.resample``), ITL resampled by request;
* ``request_throughput``, ``request_goodput``, ``output_throughput``, ``total_token_throughput``:
  batch means over the run's duration (``harness.measure.batch_means``), every request counted at
  its finish with its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from harness.measure.batch_means import rate_interval
from harness.measure.intervals import Interval, design_effect, open_interval, quantile_interval
from harness.measure.metrics import (
    RequestRecord,
    itls_s,
    latency_values_s,
    measured_duration_s,
    meets_slo,
    normalize_slo,
    tokens_out,
)
from harness.measure.percentiles import PERCENTILES
from harness.measure.resample import (
    mean_interval,
    pooled_mean_interval,
    pooled_std_interval,
    std_interval,
)

FAMILIES = ("ttft", "tpot", "itl", "e2el", "queue")
STATS = ("mean", "median", "std", "p50", "p90", "p95", "p99")
RATES = ("request_throughput", "request_goodput", "output_throughput", "total_token_throughput")
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Samples:
    """What a run's statistics rest on (seconds): ``values[family]`` per request (ITL pooled),
    ``itl_groups`` the gaps of each request, and per completed request its finish time, whether
    it met every goodput threshold, and its tokens."""

    values: dict[str, np.ndarray]
    itl_groups: list[np.ndarray]
    finish_s: np.ndarray
    good: np.ndarray | None
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    start_s: float | None
    end_s: float | None
    requests: int = field(default=0)

    @property
    def gaps_per_request(self) -> float:
        """Mean ITL gaps per request that has any (to turn a count of gaps into requests)."""
        sizes = [g.size for g in self.itl_groups if g.size]
        return float(np.mean(sizes)) if sizes else 0.0


def samples_of(
    records: Sequence[RequestRecord],
    slo_thresholds_ms: Mapping[str, float] | None = None,
    latency_origin: str = "arrival",
    duration_s: float | None = None,
) -> Samples:
    """The samples of a run's completed, non-warm-up requests, as ``summarize`` counts them (the
    same duration, origin and goodput thresholds)."""
    main = [r for r in records if not r.warmup]
    done = [r for r in main if r.completed]
    slo = normalize_slo(slo_thresholds_ms) or None
    values = {
        k: np.asarray(v, dtype=float) for k, v in latency_values_s(done, latency_origin).items()
    }
    dur = duration_s if duration_s is not None else measured_duration_s(records)
    start = min((r.arrival_s for r in main), default=None)
    return Samples(
        values=values,
        itl_groups=[np.asarray(itls_s(r), dtype=float) for r in done],
        finish_s=np.asarray([r.finish_s for r in done], dtype=float),
        good=None
        if slo is None
        else np.asarray([meets_slo(r, slo, latency_origin) for r in done], dtype=bool),
        tokens_in=np.asarray([r.input_len for r in done], dtype=float),
        tokens_out=np.asarray([tokens_out(r) for r in done], dtype=float),
        start_s=start,
        end_s=None if start is None or dur is None else start + dur,
        requests=len(done),
    )


def latency_interval(samples: Samples, family: str, stat: str, confidence: float) -> Interval:
    """The interval (ms) of ``{stat}_{family}_ms``."""
    values = samples.values[family]
    itl = family == "itl"
    units = samples.requests if itl else values.size
    if values.size == 0:
        return open_interval(confidence, "no samples", 0)
    if stat == "mean":
        iv = (
            pooled_mean_interval(samples.itl_groups, confidence)
            if itl
            else mean_interval(values, confidence)
        )
    elif stat == "std":
        iv = (
            pooled_std_interval(samples.itl_groups, confidence)
            if itl
            else std_interval(values, confidence)
        )
    else:
        q = PERCENTILES["p50" if stat == "median" else stat] / 100.0
        deff = design_effect(samples.itl_groups, q) if itl else 1.0
        iv = quantile_interval(values, q, confidence, deff=deff, n_units=units)
    return iv.scaled(1e3)


def rate_interval_of(samples: Samples, key: str, confidence: float) -> Interval:
    """The batch-means interval of one of ``RATES``."""
    n = samples.requests
    if samples.start_s is None or samples.end_s is None:
        return open_interval(confidence, "no finished request", n)
    if key == "request_goodput":
        if samples.good is None:
            return open_interval(confidence, "no goodput thresholds", n)
        weights = samples.good.astype(float)
    elif key == "output_throughput":
        weights = samples.tokens_out
    elif key == "total_token_throughput":
        weights = samples.tokens_in + samples.tokens_out
    else:
        weights = None
    return rate_interval(samples.finish_s, weights, samples.start_s, samples.end_s, confidence, n)


def interval_of(samples: Samples, key: str, confidence: float) -> Interval | None:
    """The interval of one summary key (a latency statistic or a rate); None for any other."""
    if key in RATES:
        return rate_interval_of(samples, key, confidence)
    stat, _, rest = key.partition("_")
    family = rest[: -len("_ms")] if rest.endswith("_ms") else None
    if stat in STATS and family in FAMILIES:
        return latency_interval(samples, family, stat, confidence)
    return None


def metric_intervals(samples: Samples, confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """The summary's ``intervals`` block: ``{"confidence": c, "metrics": {key: Interval dict}}``
    for every latency statistic and rate."""
    keys = [f"{st}_{fam}_ms" for fam in FAMILIES for st in STATS] + list(RATES)
    out = {}
    for key in keys:
        iv = interval_of(samples, key, confidence)
        if iv is not None:
            out[key] = iv.to_dict()
    return {"confidence": confidence, "metrics": out}
