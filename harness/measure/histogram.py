"""Pure statistics of Prometheus histograms (a server's own latency view, e.g. vLLM's /metrics).

A histogram is cumulative buckets ``[(le, count), ...]`` sorted by ``le`` and ending at
``le = +inf`` (whose count is the number of observations), plus ``sum``. Over a window, the
histogram of what happened between two scrapes is the bucket-wise difference (counters only
grow; a server restart in between makes a difference negative, and the window is then unusable).

* mean over the window   = Δsum / Δcount
* quantile q (0 ≤ q ≤ 1) = Prometheus' ``histogram_quantile``: rank = q·N (N = the +inf count);
  the first bucket i whose cumulative count c_i ≥ rank holds it; linear interpolation inside it:
  lower + (upper − lower)·(rank − c_{i−1})/(c_i − c_{i−1}), with lower = the previous bound (0 for
  the first bucket); a rank in the +inf bucket gives the largest finite bound. None when N = 0.
The bucket bounds make these estimates: a p99 is only known to within its bucket.
"""

from __future__ import annotations

import math
from typing import Sequence

Buckets = Sequence[tuple[float, float]]


def bucket_delta(after: Buckets, before: Buckets | None) -> list[tuple[float, float]] | None:
    """``after − before`` bucket by bucket (same bounds); ``after`` when there is no ``before``;
    None when the bounds differ or a count went down (the server restarted in between)."""
    if before is None:
        return [(float(le), float(c)) for le, c in after]
    b = {float(le): float(c) for le, c in before}
    out = []
    for le, c in after:
        prev = b.get(float(le), 0.0)
        if c < prev:
            return None
        out.append((float(le), float(c) - prev))
    return out


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile (0 ≤ q ≤ 1) of cumulative ``buckets`` by Prometheus' rule (module
    docstring)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be within [0, 1], got {q}")
    bs = sorted((float(le), float(c)) for le, c in buckets)
    if not bs or not math.isinf(bs[-1][0]):
        return None
    total = bs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for i, (le, c) in enumerate(bs):
        if c >= rank:
            if math.isinf(le):
                return bs[i - 1][0] if i > 0 else None
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return None


def window_stats(after: dict, before: dict | None) -> dict[str, float | None]:
    """``{"count", "mean", "p50", "p90", "p99"}`` (seconds) of one histogram between two scrapes;
    each histogram is ``{"buckets": [(le, count)], "sum": s, "count": n}``."""
    empty = {"count": None, "mean": None, "p50": None, "p90": None, "p99": None}
    if not after:
        return empty
    buckets = bucket_delta(after["buckets"], before["buckets"] if before else None)
    if buckets is None:
        return empty
    count = after["count"] - (before["count"] if before else 0.0)
    total = after["sum"] - (before["sum"] if before else 0.0)
    out = {"count": count, "mean": total / count if count > 0 else None}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        out[name] = histogram_quantile(q, buckets)
    return out
