"""What every result-format reader hands back (:class:`Imported`), and the check of a tool's own
numbers against the summary our metric functions recompute from its records (pure).

A reader turns a peer tool's files into our request records (times in s on the run's clock, 0 =
the first request's scheduled arrival) plus one :class:`Comparison` per number the tool printed:

* ``same`` definition: our summary key must reproduce the tool's value (``reproduction``);
* a different definition: the report shows both values and names the difference; where the
  reader can recompute the tool's number from the records by the tool's own formula
  (``theirs_recomputed``), that recomputation must reproduce it instead, which checks the records.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import UsageError
from harness.measure.metrics import RequestRecord


@dataclass(frozen=True)
class Comparison:
    """One number of the tool's own summary and where ours stands."""

    key: str  # our summary key (e.g. "p99_tpot_ms"); "" when we have no counterpart
    tool_key: str  # the tool's own name for it
    theirs: float | None  # the tool's value, in our unit (ms, req/s, tokens)
    same: bool  # the definitions agree
    definition: str = ""  # the tool's definition where it differs
    theirs_recomputed: float | None = None  # the tool's formula applied to our records


@dataclass
class Imported:
    """A peer tool's result read back: records, its numbers, what it says about itself."""

    tool: str  # "aiperf" | "guidellm" | "loadgen" | "vllm bench serve"
    files: list[str]
    records: list[RequestRecord]
    errors: dict[int, str]
    duration_s: float  # the tool's benchmark duration (the rates are over it)
    latency_origin: str  # "send" (the client's send) or "arrival" (LoadGen's schedule)
    workload: dict[str, Any]  # the spec's workload the result describes
    comparisons: list[Comparison] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)  # summary.engine extras
    token_counts: dict[str, Any] | None = None  # server's vs the client's count, where both
    notes: list[str] = field(default_factory=list)
    name: str = ""  # the run's default name
    goodput_in_file: float | None = (
        None  # a goodput the tool printed with thresholds it did not keep
    )

    def comparison_rows(self, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """Per comparison: the tool's value, ours, and whether the one that must agree does
        (nothing is checked without records: the tool's numbers are only kept)."""
        rows = [_row(c, metrics) for c in self.comparisons]
        if not self.records:
            for r in rows:
                r["reproduced"] = None
        return rows


def _close(a: float, b: float, rel: float, abs_: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


# LoadGen prints its rates with 6 significant digits (half a unit: 5e-6 relative); times are
# whole ns (1e-6 ms).
REL_TOL, ABS_TOL_MS = 5e-6, 1e-6


def _row(c: Comparison, metrics: dict[str, Any]) -> dict[str, Any]:
    """``reproduced``: True/False where a check applies (same definition, or the tool's formula
    recomputed), None where only both values can be shown."""
    ours = metrics.get(c.key) if c.key else None
    check = ours if c.same else c.theirs_recomputed
    if c.theirs is not None and check is not None:
        ok: bool | None = _close(check, c.theirs, REL_TOL, ABS_TOL_MS)
    elif c.same and c.key:
        ok = c.theirs is None and check is None  # one side missing is a miss
    else:
        ok = None
    return {**asdict(c), "ours": ours, "reproduced": ok}


def unreproduced(rows: list[dict[str, Any]]) -> list[str]:
    """The rows that had to agree and do not, as 'tool_key: theirs vs ours'."""
    out = []
    for r in rows:
        if r["reproduced"] is False:
            mine = r["ours"] if r["same"] else r["theirs_recomputed"]
            out.append(f"{r['tool_key']}: {r['theirs']} vs {mine}")
    return out


# ---------------------------------------------------------------- reading files, one error line


def bad(path: Path | str, tool: str, what: str) -> UsageError:
    return UsageError(f"import-bench: {path}: {what} (read as {tool})")


def read_json(path: Path, tool: str) -> Any:
    """A JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise bad(path, tool, f"unreadable ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise bad(path, tool, f"not JSON ({e.msg} at line {e.lineno}); a truncated file?") from None


def read_jsonl(path: Path, tool: str) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file as an object; a truncated or broken line is an error naming
    its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise bad(path, tool, f"unreadable ({e.__class__.__name__})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise bad(
                path, tool, f"line {i} is not JSON ({e.msg}); a truncated file? rerun the tool"
            ) from None
        if not isinstance(row, dict):
            raise bad(path, tool, f"line {i} is not a JSON object")
        rows.append(row)
    if not rows:
        raise bad(path, tool, "no records")
    return rows


def number(d: Any, key: str, where: str, tool: str, path: Path) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad(path, tool, f"{where}{key} is {v!r}, not a number")
    return float(v)


def lengths(values: list[int]) -> dict[str, Any]:
    """A workload length distribution spanning the values: fixed when they are all one."""
    lo, hi = min(values), max(values)
    return {"dist": "fixed", "value": lo} if lo == hi else {"dist": "uniform", "min": lo, "max": hi}


@dataclass(frozen=True)
class Format:
    """One entry of the format table: a name, how a path is recognised, how it is read."""

    name: str
    tool: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], Imported]
