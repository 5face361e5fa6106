"""``--find-capacity``: the highest offered load that meets every SLO (pure search logic).

The load is the request rate (open loop) or the concurrency (closed loop). From the spec's value
x0: if x0 passes, double until a probe fails; if it fails, halve until one passes. Then bisect
between the highest pass and the lowest fail until the gap is under ``rel_tol`` of the pass (or
1 for a concurrency), or the probes run out.

``search`` drives it with a probe function; the probers only run one probe each: a torchrun world
or a run against one server (``harness.commands.run_capacity``), or the simulator
(``harness.predict.capacity``). Every probe becomes one row of the same table (``probe_row``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


def next_probe(
    history: list[tuple[float, bool]],
    x0: float,
    *,
    integer: bool,
    max_probes: int,
    rel_tol: float = 0.05,
) -> float | None:
    """The next load to try after ``history`` [(load, passed), ...], or None when the search is
    done."""
    if len(history) >= max_probes:
        return None
    if not history:
        return x0
    passes = [x for x, ok in history if ok]
    fails = [x for x, ok in history if not ok]
    if not fails:  # still climbing
        x = max(passes) * 2
    elif not passes:  # still descending
        x = min(fails) / 2
        if integer and x < 1:
            return None
    else:
        lo, hi = max(passes), min(fails)
        if hi <= lo:  # noisy: a higher load passed; nothing sound to bisect
            return None
        if (integer and hi - lo <= 1) or (not integer and (hi - lo) <= rel_tol * lo):
            return None
        x = (lo + hi) / 2
    if integer:
        x = float(math.floor(x)) if fails and passes else float(round(x))
        if x < 1 or any(x == h for h, _ in history):
            return None
    return x


def capacity(history: list[tuple[float, bool]]) -> float | None:
    """The highest load that passed below the lowest that failed (None if none passed)."""
    fails = [x for x, ok in history if not ok]
    ceiling = min(fails) if fails else math.inf
    passes = [x for x, ok in history if ok and x < ceiling]
    return max(passes) if passes else None


# ---------------------------------------------------------------- the search driver


class ProbeRefused(Exception):
    """The probe's load cannot be run as a spec (e.g. the doubling passed a field's limit): the
    search ends there, with what the probes before it found."""


@dataclass
class ProbeResult:
    """One probe's outcome. ``verdict``: the run's (or simulation's) overall verdict; ``failed``:
    the probe itself did not finish (the search ends, its ``reason`` recorded); ``extra``: what
    the prober adds to its row (run directory and exit code; simulated seconds)."""

    verdict: str
    metrics: dict = field(default_factory=dict)
    slo: list = field(default_factory=list)
    failed: bool = False
    reason: str | None = None
    extra: dict = field(default_factory=dict)


# the metrics every probe row carries (vLLM bench serve names; None when not measured)
PROBE_METRICS = ("request_throughput", "request_goodput", "p99_ttft_ms", "p99_tpot_ms")


def probe_row(index: int, field_name: str, value: float, result: ProbeResult) -> dict:
    """The one row a probe adds to ``capacity.json``'s ``probes``, whatever ran it."""
    return {
        "probe": index,
        field_name: value,
        "verdict": "INCOMPLETE" if result.failed else result.verdict,
        **{k: result.metrics.get(k) for k in PROBE_METRICS},
        "slo": result.slo,
        "failed": result.failed,
        **({"reason": result.reason} if result.failed else {}),
        **result.extra,
    }


def load_axis(workload) -> tuple[str, float, bool]:
    """(spec field, starting value, integer?) the search moves: the request rate of an open loop,
    the concurrency of a closed one."""
    if workload.arrival == "closed":
        return "workload.concurrency", float(workload.concurrency), True
    return "workload.rate_rps", float(workload.rate_rps), False


def search(
    workload,
    probe: Callable[[int | float], ProbeResult],
    max_probes: int,
    on_probe: Callable[[dict], None] | None = None,
) -> dict:
    """Drive ``probe(value)`` along ``next_probe`` from the spec's load; the capacity document
    {field, start, probes, capacity, done[, stopped]}. ``on_probe(doc)`` sees it after every probe
    (``done`` false). A failed probe ends the search with ``done`` false and ``stopped`` naming it;
    a refused one ends it with ``done`` true and ``stopped``."""
    field_name, x0, integer = load_axis(workload)
    history: list[tuple[float, bool]] = []
    doc: dict = {"field": field_name, "start": x0, "probes": [], "capacity": None, "done": False}
    while (x := next_probe(history, x0, integer=integer, max_probes=max_probes)) is not None:
        value = int(x) if integer else round(x, 6)
        try:
            result = probe(value)
        except ProbeRefused as e:
            doc["stopped"] = f"probe {field_name}={value}: {e}"
            break
        doc["probes"].append(probe_row(len(doc["probes"]), field_name, value, result))
        if result.failed:
            doc["stopped"] = f"probe {field_name}={value} failed: {result.reason}"
            if on_probe is not None:
                on_probe(doc)
            return doc
        history.append((x, result.verdict == "PASS"))
        doc["capacity"] = capacity(history)
        if on_probe is not None:
            on_probe(doc)
    doc["done"] = True
    return doc
