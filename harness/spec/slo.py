"""SLO targets as data ("p99_ttft_ms <= 2000") and their verdicts against a run summary.

A target is ``<name> <op> <value>``, the name spelled as ``vllm bench serve`` writes its result keys
(which are also the summary's):
- latencies ``<stat>_<metric>_ms <= X``: metric ``ttft``, ``tpot``, ``itl``, ``e2el``, ``queue``;
  stat ``mean``, ``median``, ``std``, ``p50``, ``p90``, ``p95``, ``p99``;
- rates ``request_throughput``, ``request_goodput`` (requests/s), ``output_throughput`` and
  ``total_token_throughput`` (tokens/s), ``>= X``.
The older spelling is read too: ``<metric>_<stat>_<ms|s>`` (``ttft_p99_ms``, ``e2e_p90_s``; ``e2e``
is ``e2el``) and ``throughput_rps``, ``goodput_rps``, ``output_tps``; either names one target, and a
later target on the same statistic replaces an earlier one. Margin (%) is the headroom: for ``<=``
(target − measured)/target·100, for ``>=`` (measured − target)/target·100; a negative margin is a
miss."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.errors import UsageError, shown

LATENCY_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el", "queue": "queue"}
STATS = ("mean", "median", "std", "p50", "p90", "p95", "p99")
RATE_METRICS = {
    "throughput_rps": "request_throughput",
    "goodput_rps": "request_goodput",
    "output_tps": "output_throughput",
}
# vLLM's names: summary key → the target's metric (the older spelling's name, which the planner
# reads).
VLLM_RATES = {
    "request_throughput": "throughput_rps",
    "request_goodput": "goodput_rps",
    "output_throughput": "output_tps",
    "total_token_throughput": "total_token_throughput",
}
_FAMILY = {
    "ttft": "ttft",
    "tpot": "tpot",
    "itl": "itl",
    "e2el": "e2e",
    "e2e": "e2e",
    "queue": "queue",
}

SLO_PRESETS: dict[str, list[str]] = {
    # MLPerf Inference v4+ Llama2-70B scenarios (source: MLCommons inference rules).
    "mlperf-llama2-70b-server": ["ttft_p99_ms <= 2000", "tpot_p99_ms <= 200"],
    "mlperf-llama2-70b-interactive": ["ttft_p99_ms <= 450", "tpot_p99_ms <= 40"],
}

# What a named preset is, and what it is not: MLPerf's latency limits are borrowed; its rules are
# not
# applied (MLCommons inference rules: every scenario runs at least 600 s and a minimum query count,
# on
# the dataset's prompts, with an accuracy run beside the performance one).
PRESET_NOTES: dict[str, str] = {
    name: (
        "MLPerf Inference Llama2-70B latency limits only ("
        + ", ".join(SLO_PRESETS[name])
        + "); not an MLPerf "
        "run: no minimum duration (MLPerf: 600 s) or query count, no accuracy run, random prompts"
    )
    for name in SLO_PRESETS
    if name.startswith("mlperf-")
}
PRESET_MIN_DURATION_S: dict[str, float] = {name: 600.0 for name in PRESET_NOTES}


def preset_caveat(preset: str | None, duration_s: float | None) -> dict | None:
    """What a run judged by ``preset`` can and cannot claim: {preset, note, min_duration_s,
    duration_s, warning}; ``warning`` when the measured duration is below the benchmark's minimum.
    None: no preset (or one that borrows nothing)."""
    if preset not in PRESET_NOTES:
        return None
    need = PRESET_MIN_DURATION_S[preset]
    short = duration_s is not None and duration_s < need
    return {
        "preset": preset,
        "note": PRESET_NOTES[preset],
        "min_duration_s": need,
        "duration_s": duration_s,
        "warning": (
            f"the run measured {duration_s:.0f} s, shorter than MLPerf's minimum {need:.0f} s: its "
            "tail latencies rest on fewer requests than an MLPerf result's"
        )
        if short
        else None,
    }


_TARGET = re.compile(r"^\s*([a-z0-9_.]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class SloTarget:
    text: str
    metric: str  # ttft | tpot | itl | e2e | queue | throughput_rps | goodput_rps | output_tps |
    # total_token_throughput
    stat: str | None  # for latency metrics
    op: str  # "<=" or ">="
    value: float  # in ms for latencies, as written for rates
    summary_key: str  # the field of the run summary it is judged against

    @property
    def is_latency(self) -> bool:
        return self.stat is not None


def _latency(
    text: str,
    field: str,
    raw: str,
    op: str,
    value: float,
    metric: str,
    stat: str,
    unit: str,
    name: str,
) -> SloTarget:
    if stat not in STATS:
        raise UsageError(
            f"{field}: unknown statistic {stat!r} in {text!r}; use one of {', '.join(STATS)}"
        )
    if unit not in ("ms", "s"):
        raise UsageError(f"{field}: unknown unit {unit!r} in {text!r}; use ms or s")
    if op != "<=":
        raise UsageError(f"{field}: {name} is a latency; write '{name} <= {raw}'")
    ms = value * 1000.0 if unit == "s" else value
    return SloTarget(text.strip(), metric, stat, op, ms, f"{stat}_{LATENCY_METRICS[metric]}_ms")


def parse_target(text: str, field: str = "slo.targets") -> SloTarget:
    m = _TARGET.match(str(text))
    if not m:
        raise UsageError(
            f"{field}: cannot read {shown(text)}; write e.g. 'p99_ttft_ms <= 2000' or "
            "'request_throughput >= 8'"
        )
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
    if name in RATE_METRICS or name in VLLM_RATES:
        if op != ">=":
            raise UsageError(f"{field}: {name} is a rate; write '{name} >= {raw}'")
        metric = VLLM_RATES.get(name, name)
        key = name if name in VLLM_RATES else RATE_METRICS[name]
        return SloTarget(text.strip(), metric, None, op, value, key)
    parts = name.split("_")
    if len(parts) == 3 and parts[0] in _FAMILY:  # the older spelling: ttft_p99_ms, e2e_p90_s
        return _latency(text, field, raw, op, value, _FAMILY[parts[0]], parts[1], parts[2], name)
    if len(parts) == 3 and parts[1] in _FAMILY:  # vLLM's: p99_ttft_ms, mean_e2el_ms
        if parts[2] != "ms":
            raise UsageError(
                f"{field}: vLLM's latency keys are in ms: write '{parts[0]}_{parts[1]}_ms' in "
                f"{text!r}"
            )
        return _latency(text, field, raw, op, value, _FAMILY[parts[1]], parts[0], "ms", name)
    raise UsageError(
        f"{field}: unknown metric {name!r} in {text!r}; use <mean|median|std|p50|p90|p95|p99>_"
        f"<ttft|tpot|itl|e2el|queue>_ms or one of {', '.join(VLLM_RATES)}"
    )


def resolve_targets(preset: str | None, targets: list[str], field: str = "slo") -> list[SloTarget]:
    out: list[SloTarget] = []
    if preset:
        if preset not in SLO_PRESETS:
            raise UsageError(
                f"{field}.preset: unknown preset {preset!r}; use one of {', '.join(SLO_PRESETS)}"
            )
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
    passed: bool | None  # None: not measured
    margin_pct: float | None


def margin_pct(t: SloTarget, measured: float) -> float | None:
    """The headroom (%): (target − measured)/target·100 for ``<=``, (measured − target)/target·100
    for ``>=``; None for a target of 0."""
    if not t.value:
        return None
    diff = t.value - measured if t.op == "<=" else measured - t.value
    return diff / t.value * 100.0


def met(t: SloTarget, value: float) -> bool:
    """``value`` is on the target's good side (``<=``: at or under it; ``>=``: at or over it)."""
    return value <= t.value if t.op == "<=" else value >= t.value


def judge(targets: list[SloTarget], summary: dict) -> list[SloVerdict]:
    """Point verdicts: each number against its target, with no statement of how sure (a measured
    run's verdicts come from ``harness.measure.slo_verdicts``, a forecast's from
    ``harness.predict.verdicts``)."""
    out = []
    for t in targets:
        v = summary.get(t.summary_key)
        if v is None:
            out.append(SloVerdict(t, None, None, None))
            continue
        v = float(v)
        out.append(SloVerdict(t, v, met(t, v), margin_pct(t, v)))
    return out
