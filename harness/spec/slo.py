"""SLO targets as data ("ttft_p99_ms <= 2000") and their verdicts against a run summary.

A target reads ``<metric>[_<stat>]_<unit> <op> <value>``:
- latency metrics ``ttft``, ``tpot``, ``itl``, ``e2e``, ``queue`` with a statistic
  (``mean``, ``median``, ``p50``, ``p90``, ``p95``, ``p99``) and a unit (``ms`` or ``s``);
- rates ``throughput_rps``, ``goodput_rps`` (requests/s) and ``output_tps`` (tokens/s).
Margin (%) is the headroom: for ``<=`` (target − measured)/target·100, for ``>=``
(measured − target)/target·100; a negative margin is a miss.
"""

from __future__ import annotations

import math

import re
from dataclasses import dataclass

from harness.errors import UsageError, shown

LATENCY_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el", "queue": "queue"}
STATS = ("mean", "median", "p50", "p90", "p95", "p99")
RATE_METRICS = {"throughput_rps": "request_throughput", "goodput_rps": "request_goodput",
                "output_tps": "output_throughput"}

SLO_PRESETS: dict[str, list[str]] = {
    # MLPerf Inference v4+ Llama2-70B scenarios (source: MLCommons inference rules).
    "mlperf-llama2-70b-server": ["ttft_p99_ms <= 2000", "tpot_p99_ms <= 200"],
    "mlperf-llama2-70b-interactive": ["ttft_p99_ms <= 450", "tpot_p99_ms <= 40"],
}

_TARGET = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class SloTarget:
    text: str
    metric: str          # ttft | tpot | itl | e2e | queue | throughput_rps | goodput_rps | output_tps
    stat: str | None     # for latency metrics
    op: str              # "<=" or ">="
    value: float         # in ms for latencies, as written for rates
    summary_key: str     # the field of the run summary it is judged against

    @property
    def is_latency(self) -> bool:
        return self.stat is not None


def parse_target(text: str, field: str = "slo.targets") -> SloTarget:
    m = _TARGET.match(str(text))
    if not m:
        raise UsageError(f"{field}: cannot read {shown(text)}; write e.g. 'ttft_p99_ms <= 2000' or 'throughput_rps >= 8'")
    name, op, raw = m.groups()
    op = {"<": "<=", ">": ">="}.get(op, op)
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{field}: {raw!r} in {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{field}: {shown(text)} has no finite target; give a number such as 2000")
    if value < 0:
        raise UsageError(f"{field}: {shown(text)} has a negative target; targets are >= 0")
    if name in RATE_METRICS:
        if op != ">=":
            raise UsageError(f"{field}: {name} is a rate; write '{name} >= {raw}'")
        return SloTarget(text.strip(), name, None, op, value, RATE_METRICS[name])
    parts = name.split("_")
    if len(parts) == 3 and parts[0] in LATENCY_METRICS:
        metric, stat, unit = parts
        if stat not in STATS:
            raise UsageError(f"{field}: unknown statistic {stat!r} in {text!r}; use one of {', '.join(STATS)}")
        if unit not in ("ms", "s"):
            raise UsageError(f"{field}: unknown unit {unit!r} in {text!r}; use ms or s")
        if op != "<=":
            raise UsageError(f"{field}: {name} is a latency; write '{name} <= {raw}'")
        ms = value * 1000.0 if unit == "s" else value
        stat_key = "median" if stat == "median" else stat
        return SloTarget(text.strip(), metric, stat, op, ms, f"{stat_key}_{LATENCY_METRICS[metric]}_ms")
    raise UsageError(f"{field}: unknown metric {name!r} in {text!r}; use <ttft|tpot|itl|e2e|queue>_<stat>_<ms|s> "
                     f"or one of {', '.join(RATE_METRICS)}")


def resolve_targets(preset: str | None, targets: list[str], field: str = "slo") -> list[SloTarget]:
    out: list[SloTarget] = []
    if preset:
        if preset not in SLO_PRESETS:
            raise UsageError(f"{field}.preset: unknown preset {preset!r}; use one of {', '.join(SLO_PRESETS)}")
        out.extend(parse_target(t, f"{field}.preset") for t in SLO_PRESETS[preset])
    out.extend(parse_target(t, f"{field}.targets[{i}]") for i, t in enumerate(targets))
    # A later target on the same metric and statistic replaces the preset's.
    dedup: dict[str, SloTarget] = {}
    for t in out:
        dedup[t.summary_key] = t
    return list(dedup.values())


def per_request_thresholds_ms(targets: list[SloTarget]) -> dict[str, float]:
    """Per-request thresholds for goodput (DistServe): the tightest latency target per metric."""
    out: dict[str, float] = {}
    for t in targets:
        if t.is_latency and t.metric in ("ttft", "tpot", "e2e"):
            out[t.metric] = min(out.get(t.metric, float("inf")), t.value)
    return out


@dataclass(frozen=True)
class SloVerdict:
    target: SloTarget
    measured: float | None
    passed: bool | None       # None: not measured
    margin_pct: float | None


def judge(targets: list[SloTarget], summary: dict) -> list[SloVerdict]:
    out = []
    for t in targets:
        v = summary.get(t.summary_key)
        if v is None:
            out.append(SloVerdict(t, None, None, None))
            continue
        v = float(v)
        if t.op == "<=":
            ok = v <= t.value
            margin = (t.value - v) / t.value * 100.0 if t.value else None
        else:
            ok = v >= t.value
            margin = (v - t.value) / t.value * 100.0 if t.value else None
        out.append(SloVerdict(t, v, ok, margin))
    return out


def overall(verdicts: list[SloVerdict]) -> str:
    """PASS when every target was measured and met; FAIL when any was missed; else UNMEASURED."""
    if any(v.passed is False for v in verdicts):
        return "FAIL"
    if all(v.passed for v in verdicts):
        return "PASS"
    return "UNMEASURED"
