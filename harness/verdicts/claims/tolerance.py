"""Claimed vs expected: the tolerance rule, the readings of a claim's units, and the unit slip that
explains a refuted number.

|claimed − expected| <= max(rel·|expected|, half a unit of the claim's last stated digit)
(``Claim.quantum``), or an absolute tolerance where given (ε: 0.005); rel = 2 % for memory,
bytes and counts, 5 % for run-time rates and utilisations (docs/claims.md). A claim stating a bound
("ε < 0.05") holds when the expected value is on its side, within the same tolerance.

Readings (harness.verdicts.claims.units): the claim is CONFIRMED when it holds under one reading of
its units (GB as 10^9 B or as GiB ...; for a percentage of a capacity, each capacity it may be of),
and the verdict names that reading; it is REFUTED only when no reading makes it hold, and then
shows the first (decimal) reading. A refuted value is explained by the first of: a named
alternative computation, ÷tp, a power-of-ten/two unit factor, or a binary unit read as a decimal
one (KiB/MiB/GiB as kB/MB/GB), each within the same tolerance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.verdicts.claims.parse import Claim
from harness.verdicts.claims.units import Reading

REL_STATIC = 0.02
REL_RUNTIME = 0.05
EPS_ABS = 0.005
SLIP_FACTORS = (
    (1e3, "x1000"),
    (1024.0, "x1024"),
    (1e6, "x1e6"),
    (2.0**20, "x2^20"),
    (1e9, "x1e9"),
    (2.0**30, "x2^30"),
)
GIB_PER_GB = 2**30 / 1e9
BINARY_SLIPS = (
    (1.024, "KiB/KB", "KiB (1024 B) labelled kB (1000 B)"),
    (1.024**2, "MiB/MB", "MiB (2^20 B) labelled MB (1e6 B)"),
    (GIB_PER_GB, "GiB/GB", "GiB (2^30 B) labelled GB (1e9 B)"),
)


@dataclass
class Verdict:
    id: str
    index: int | None
    text: str
    claimed: Any
    expected: Any
    verdict: str  # CONFIRMED | REFUTED | UNVERIFIED
    reason: str
    source: str  # measured | predicted | stated
    ratio: float | None = None  # claimed / expected
    unit_slip: str | None = None  # x1000, x1024, x1e6, x2^20, GiB/GB, ÷tp
    reading: str | None = (
        None  # the reading of the claim's units it holds under ("KB read as KiB ...")
    )


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


@dataclass
class Alt:
    value: float
    slip: str | None
    note: str


def holds(claimed: float, expected: float, tol: float, bound: str | None) -> bool:
    if bound == "upper":
        return expected <= claimed + tol
    if bound == "lower":
        return expected >= claimed - tol
    return abs(claimed - expected) <= tol


def compare_claim(
    c: Claim,
    expected: float,
    reason: str,
    source: str,
    tp: int,
    rel: float = REL_STATIC,
    abs_tol: float | None = None,
    alts: tuple[Alt, ...] = (),
    tp_slip: bool = False,
    binary: bool = False,
    readings: tuple[Reading, ...] = (Reading(None),),
) -> Verdict:
    """CONFIRMED within tolerance under one of ``readings`` (claimed and expected then given under
    that reading, in canonical units), else REFUTED under the first reading with the ratio and the
    slip that explains it; ``tp`` is the layout's TP degree (for the ÷tp slip)."""
    # (closeness, order, reading, claimed, expected): the closest reading that holds is named
    held = []
    for k, r in enumerate(readings):
        claimed, q = c.claimed * r.factor, c.quantum * r.factor
        exp = expected if r.expected is None else r.expected
        tol = abs_tol if abs_tol is not None else max(rel * abs(exp), q)
        if holds(claimed, exp, tol, c.bound):
            held.append((abs(claimed - exp) / max(tol, 1e-300), k, r, claimed, exp))
    if held:
        _, _, r, claimed, exp = min(held, key=lambda h: (h[0], h[1]))
        note = f"{reason}; reading: {r.label}" if r.label else reason
        return Verdict(
            c.id,
            c.index,
            c.text,
            claimed,
            exp,
            "CONFIRMED",
            note,
            source,
            claimed / exp if exp else None,
            reading=r.label,
        )
    first = readings[0]
    exp = expected if first.expected is None else first.expected
    ratio = c.claimed / exp if exp else None
    slip, note = unit_slip(c, exp, rel, alts, tp_slip, binary, ratio, tp)
    why = (
        f"expected {fmt(exp)}"
        + (f" (claimed/expected = {ratio:.4g})" if ratio else "")
        + f": {reason}"
        + (
            f"; it holds under no reading ({'; '.join(r.label for r in readings)})"
            if len(readings) > 1
            else ""
        )
    )
    return Verdict(
        c.id,
        c.index,
        c.text,
        c.claimed,
        exp,
        "REFUTED",
        why + (f"; {note}" if note else ""),
        source,
        ratio,
        slip,
    )


def unit_slip(
    c: Claim, expected: float, rel: float, alts, tp_slip: bool, binary: bool, ratio, tp: int
):
    """The first explanation of a refuted number: a named alternative computation, ÷tp, the
    nearest power-of-ten/two unit factor, or GiB read as GB (each within the claim's tolerance)."""

    def err(e: float) -> float:
        return abs(c.claimed - e) / max(rel * abs(e), c.quantum, 1e-12)  # <= 1: within tolerance

    for a in alts:
        if err(a.value) <= 1:
            return a.slip, f"{fmt(c.claimed)} matches {fmt(a.value)} {a.note}"
    if tp_slip and tp > 1 and ratio and abs(ratio / tp - 1) <= 0.05:
        return "÷tp", f"about tp={tp} times too large: computed without TP sharding (÷tp missing)"
    if not c.claimed or not expected:
        return None, None
    best = min(
        [(err(expected / f), f, name, "larger") for f, name in SLIP_FACTORS]
        + [(err(expected * f), f, name, "smaller") for f, name in SLIP_FACTORS]
    )
    if best[0] <= 1:
        _, f, name, way = best
        return name, (
            f"a {name} unit slip: {fmt(c.claimed)} is the value in a unit {name[1:]} times {way} "
            f"than the one stated"
            + (" (KiB written as bytes?)" if name == "x1024" and way == "larger" else "")
        )
    if binary:
        for f, name, what in BINARY_SLIPS:
            if err(expected / f) <= 1:
                return name, f"the value in {what}"
    return None, None
