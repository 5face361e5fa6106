"""The readings of a claim's units: one rule for every claim that states a size.

A report's "GB", "MB", "KB" and "TB" may mean the decimal unit (10^9 B ...) or the binary one
(GiB = 2^30 B ...): datasheets and tools use both, and a report seldom says which. A claim is read
under each reading of its own units, the same reading for every unit of that claim, and holds when
one reading makes it hold (harness.verdicts.claims.tolerance). "GiB", "MiB", "KiB", "TiB" and
"bytes" have one reading only.

Canonical units of a parsed claim are those of the decimal reading (GB = 1e9 B, bytes); a reading is
the factor that turns that value into the value under the reading."""

from __future__ import annotations

from dataclasses import dataclass

# unit (lower case) -> bytes, decimal reading
BYTES = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_POWER = {"kb": 1, "mb": 2, "gb": 3, "tb": 4}  # the ambiguous ones: 1000^k or 1024^k bytes
SIZE_UNITS = r"TiB|GiB|MiB|KiB|TB|GB|MB|KB|bytes?|B"  # regex alternation, longest first


@dataclass(frozen=True)
class Reading:
    label: str | None  # None: the claim's units have this one reading only
    factor: float = 1.0  # claimed (canonical, decimal reading) -> claimed under this reading
    expected: float | None = None  # the expected value under this reading, when it depends on it


def scale(unit: str, to: str) -> float:
    """Canonical value of 1 ``unit`` in the unit ``to`` ("bytes" or "gb"), decimal reading."""
    return BYTES[unit.lower()] / BYTES[to]


def readings(unit: str | None) -> tuple[Reading, ...]:
    """'GB' -> (decimal: 10^9 B, binary: 2^30 B); 'GiB', 'bytes', None -> one reading."""
    if unit is None or unit.lower() not in _POWER:
        return (Reading(None),)
    k = _POWER[unit.lower()]
    binary = unit[0].upper() + "iB"
    return (
        Reading(f"decimal, 1 {unit} = 10^{3 * k} B", 1.0),
        Reading(f"binary, 1 {unit} = 1 {binary} = 2^{10 * k} B", 1.024**k),
    )


def capacity_readings(value_gb: float, unit: str | None, whose: str) -> list[tuple[str, float]]:
    """A stated capacity (canonical GB under the decimal reading) under each reading of its unit:
    [(label, bytes)], e.g. 80 GB -> [("the report's 80 GB (decimal ...)", 8e10), ("... (binary
    ...)", 8.59e10)]."""
    shown = f"{value_gb:g}" if unit is None else f"{value_gb / scale(unit, 'gb'):g} {unit}"
    out = []
    for r in readings(unit):
        label = f"{whose} {shown}" + (f" ({r.label})" if r.label else "")
        out.append((label, value_gb * 1e9 * r.factor))
    return out
