"""Pipeline stage timing: busy fraction, bubble ratio and imbalance from per-step records.

Input rows (one per rank per micro-batch step), monotonic seconds:
``t_recv_start_s`` (began waiting for the step's input), ``t_recv_end_s`` (input arrived),
``t_compute_end_s`` (stage forward done), ``t_send_end_s`` (output handed on).

Per rank, over the window from its first ``t_recv_start_s`` to its last ``t_send_end_s``:
- compute = Σ (t_compute_end − t_recv_end)
- wait    = Σ (t_recv_end − t_recv_start)         (idle: waiting for the previous stage)
- send    = Σ (t_send_end − t_compute_end)
- busy fraction = compute / wall;  bubble ratio = 1 − busy fraction = idle / wall
Per stage: the mean over its TP ranks. Imbalance = max stage compute / mean stage compute.
The run's bubble ratio is the mean of the stages' bubble ratios."""

from __future__ import annotations

from collections import defaultdict

STAGE_COLUMNS = (
    "rank",
    "dp",
    "stage",
    "tp",
    "step",
    "t_recv_start_s",
    "t_recv_end_s",
    "t_compute_end_s",
    "t_send_end_s",
)


def rank_stats(rows: list[dict]) -> dict[int, dict]:
    by_rank: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_rank[r["rank"]].append(r)
    out = {}
    for rank, rs in by_rank.items():
        wall = max(r["t_send_end_s"] for r in rs) - min(r["t_recv_start_s"] for r in rs)
        compute = sum(r["t_compute_end_s"] - r["t_recv_end_s"] for r in rs)
        wait = sum(r["t_recv_end_s"] - r["t_recv_start_s"] for r in rs)
        send = sum(r["t_send_end_s"] - r["t_compute_end_s"] for r in rs)
        busy = compute / wall if wall > 0 else None
        out[rank] = {
            "rank": rank,
            "stage": rs[0]["stage"],
            "dp": rs[0]["dp"],
            "tp": rs[0]["tp"],
            "steps": len(rs),
            "wall_s": wall,
            "compute_s": compute,
            "wait_s": wait,
            "send_s": send,
            "busy_fraction": busy,
            "bubble_ratio": None if busy is None else 1.0 - busy,
        }
    return out


def stage_stats(rows: list[dict]) -> list[dict]:
    per_rank = rank_stats(rows)
    by_stage: dict[int, list[dict]] = defaultdict(list)
    for st in per_rank.values():
        by_stage[st["stage"]].append(st)
    out = []
    for stage in sorted(by_stage):
        rs = by_stage[stage]

        def mean(key):
            vals = [r[key] for r in rs if r[key] is not None]
            return sum(vals) / len(vals) if vals else None

        out.append(
            {
                "stage": stage,
                "ranks": len(rs),
                "compute_s": mean("compute_s"),
                "wait_s": mean("wait_s"),
                "send_s": mean("send_s"),
                "wall_s": mean("wall_s"),
                "busy_fraction": mean("busy_fraction"),
                "bubble_ratio": mean("bubble_ratio"),
            }
        )
    return out


def pipeline_summary(rows: list[dict]) -> dict:
    stages = stage_stats(rows)
    if not stages:
        return {"bubble_ratio": None, "imbalance": None, "stages": []}
    computes = [s["compute_s"] for s in stages]
    bubbles = [s["bubble_ratio"] for s in stages if s["bubble_ratio"] is not None]
    mean_compute = sum(computes) / len(computes)
    return {
        "bubble_ratio": sum(bubbles) / len(bubbles) if bubbles else None,
        "imbalance": max(computes) / mean_compute if mean_compute > 0 else None,
        "stages": stages,
    }
