"""``--find-capacity``: the highest offered load that meets every SLO (pure search logic).

The load is the request rate (open loop) or the concurrency (closed loop). From the spec's value
x0: if x0 passes, double until a probe fails; if it fails, halve until one passes. Then bisect
between the highest pass and the lowest fail until the gap is under ``rel_tol`` of the pass (or
1 for a concurrency), or the probes run out. Each probe is a full run; the caller records it.
"""

from __future__ import annotations

import math


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
