"""The sweep's loads: ``--loads`` read into a ladder along the spec's load axis (the request rate
of an open loop, the concurrency of a closed one: ``harness.verdicts.capacity.load_axis``), and
the knee that ends an ``auto`` ladder.

``auto``: the spec's load x0, then 2·x0, 4·x0, … (at most ``AUTO_STEPS`` loads) until the knee.
The knee is the first load whose doubling no longer pays: at point i (loads ascending) the request
throughput rose by less than ``RISE`` over point i−1 while the median end-to-end latency climbed by
more than ``CLIMB``; the knee is load i−1 (the last one where more load bought throughput), and
the ladder stops after point i, which shows the saturation. Without such a point the ladder runs
to its end.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UsageError
from harness.verdicts.capacity import load_axis

AUTO_STEPS = 5
RISE = 0.10  # throughput gain below which a doubled load "stopped rising"
CLIMB = 0.20  # latency growth above which it "climbs"


@dataclass(frozen=True)
class LoadPoint:
    """One measured (or simulated) load: what the knee is judged on."""

    load: float
    request_throughput: float | None
    median_e2el_ms: float | None


def knee(points: list[LoadPoint]) -> float | None:
    """The knee's load (module docstring), or None when throughput never stopped rising."""
    pts = sorted(points, key=lambda p: p.load)
    for prev, cur in zip(pts, pts[1:]):
        if None in (prev.request_throughput, cur.request_throughput):
            continue
        if None in (prev.median_e2el_ms, cur.median_e2el_ms) or not prev.median_e2el_ms:
            continue
        rise = (
            cur.request_throughput / prev.request_throughput - 1.0 if prev.request_throughput else 0
        )
        climb = cur.median_e2el_ms / prev.median_e2el_ms - 1.0
        if rise < RISE and climb > CLIMB:
            return prev.load
    return None


@dataclass(frozen=True)
class Ladder:
    field: str  # workload.rate_rps | workload.concurrency
    integer: bool
    loads: tuple[float, ...]  # ascending; auto: the whole geometric ladder
    auto: bool

    @property
    def axis(self) -> str:
        """The load's short name in run directory names."""
        return "concurrency" if self.integer else "rate"

    def value(self, load: float) -> int | float:
        return int(load) if self.integer else round(float(load), 6)

    def label(self, load: float) -> str:
        return f"{self.axis}-{self.value(load):g}"

    def next_load(self, measured: list[LoadPoint]) -> float | None:
        """The next load to run after ``measured`` (this layout's points so far), None when done:
        a listed ladder runs every load; ``auto`` stops after the knee."""
        done = {p.load for p in measured}
        if self.auto and knee(measured) is not None:
            return None
        return next((x for x in self.loads if x not in done), None)


def ladder(spec, loads: str) -> Ladder:
    """``--loads`` (``auto`` or a comma-separated list of positive numbers) on ``spec``'s axis;
    ``UsageError`` naming the bad entry."""
    field_name, x0, integer = load_axis(spec.workload)
    if loads.strip().lower() == "auto":
        xs = [x0 * 2**k for k in range(AUTO_STEPS)]
        return Ladder(
            field_name, integer, tuple(float(round(x)) if integer else x for x in xs), True
        )
    values = []
    for part in [p.strip() for p in loads.split(",") if p.strip()]:
        try:
            x = float(part)
        except ValueError:
            x = float("nan")
        if not x > 0 or x == float("inf") or (integer and not x.is_integer()):
            what = "positive integers (concurrency)" if integer else "positive request rates"
            raise UsageError(f"--loads: {part!r} is not a load; give {what}, e.g. 2,4,8, or auto")
        values.append(x)
    if not values:
        raise UsageError("--loads: no load given; write auto or e.g. 2,4,8")
    return Ladder(field_name, integer, tuple(sorted(set(values))), False)
