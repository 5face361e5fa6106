"""Bandwidth of traced communication, as nccl-tests defines it (pure; no torch).

For one op of ``bytes`` B (the local tensor) in a group of n ranks taking t seconds:
- size S = ``op_size``: B for all_reduce, broadcast, send and recv; n·B for all_gather (the
  gathered buffer, nccl-tests' convention) and for reduce_scatter the input n·B as well
- algbw = S / t
- busbw = algbw × ``bus_factor``: 2(n−1)/n for all_reduce, (n−1)/n for all_gather and
  reduce_scatter, 1 for broadcast, send and recv
Size and factor come from the one table of ops (``harness.plan.comm.COLLECTIVES``), which the
planner's link-time floors use too. busbw is comparable with the link's peak bandwidth whatever
the collective.
On the CPU, times are wall clock around the call; an isend/irecv's time runs from its post to
its ``wait()`` (so it includes waiting for the peer), which this module cannot tell apart.
"""

from __future__ import annotations

from collections import defaultdict

from harness.plan.comm import bus_factor, op_size

DERIVED_COLUMNS = ("time_s", "algbw_gbps", "busbw_gbps")


def with_bandwidth(rows: list[dict]) -> list[dict]:
    """Each trace row plus time_s, algbw_gbps and busbw_gbps (None when the op was not timed)."""
    out = []
    for r in rows:
        t0, t1 = r.get("t_start_s"), r.get("t_end_s")
        t = (t1 - t0) if t0 is not None and t1 is not None else None
        if t is None or t <= 0:
            out.append({**r, "time_s": t, "algbw_gbps": None, "busbw_gbps": None})
            continue
        n = r.get("group_size") or 2
        alg = op_size(r["op"], r["bytes"], n) / t / 1e9
        out.append(
            {**r, "time_s": t, "algbw_gbps": alg, "busbw_gbps": alg * bus_factor(r["op"], n)}
        )
    return out


def per_group_op(rows: list[dict]) -> list[dict]:
    """Totals per (group, op): ops, bytes, time, and algbw/busbw of the totals (Σ size / Σ time)."""
    acc: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"ops": 0, "bytes": 0, "size": 0, "time_s": 0.0, "timed": 0, "n": 2}
    )
    for r in rows:
        a = acc[(r["group"], r["op"])]
        n = r.get("group_size") or 2
        a["ops"] += 1
        a["bytes"] += r["bytes"]
        a["n"] = n
        t0, t1 = r.get("t_start_s"), r.get("t_end_s")
        if t0 is not None and t1 is not None:
            a["time_s"] += t1 - t0
            a["size"] += op_size(r["op"], r["bytes"], n)
            a["timed"] += 1
    out = []
    for (group, op), a in sorted(acc.items()):
        alg = a["size"] / a["time_s"] / 1e9 if a["time_s"] > 0 else None
        out.append(
            {
                "group": group,
                "op": op,
                "ops": a["ops"],
                "bytes": a["bytes"],
                "time_s": a["time_s"],
                "algbw_gbps": alg,
                "busbw_gbps": None if alg is None else alg * bus_factor(op, a["n"]),
            }
        )
    return out
