"""The sweep's measured points, their Pareto front, the best layout under the SLOs and its advantage
over the spec's own layout. Pure: summaries in, dicts out.

Axes (as vLLM's ``plot_pareto`` and AIPerf draw them):
- output tokens/s per GPU = ``output_throughput`` / GPUs of the layout (its interval: the
  summary's batch-means interval of ``output_throughput``, divided the same way);
- output tokens/s per user = 1000 / ``mean_tpot_ms`` (one sequence's decode speed; its interval:
  the bootstrap interval of ``mean_tpot_ms``, inverted, so low and high swap).
A point is on the front when no other point is at least as good on both axes and better on one.

Best under the SLOs: among the runs whose verdict is PASS (every SLO met with confidence; an
INCONCLUSIVE run is not feasible: its data could not decide), the most ``request_goodput`` per
GPU (requests/s meeting every per-request threshold), ties to more tokens/s per user. Its
advantage over the spec's layout: the relative change of goodput per GPU from the spec layout's
best feasible run (or, when the spec's layout met the SLOs at no load, its run of most goodput) to
the best, with the MOVER interval of both runs' batch-means intervals
(``harness.verdicts.change.change``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.verdicts.change import change


def _iv(summary: dict, key: str) -> tuple[float | None, float | None]:
    iv = ((summary.get("intervals") or {}).get("metrics") or {}).get(key) or {}
    return iv.get("low"), iv.get("high")


def _div(x: float | None, d: float) -> float | None:
    return None if x is None else x / d


def _inv(x: float | None) -> float | None:
    return None if x is None or x <= 0 else 1000.0 / x


@dataclass(frozen=True)
class Point:
    layout: str
    load: float
    gpus: int
    verdict: str
    run_dir: str
    per_gpu: float | None  # output tokens/s per GPU
    per_gpu_low: float | None
    per_gpu_high: float | None
    per_user: float | None  # output tokens/s per user
    per_user_low: float | None
    per_user_high: float | None
    goodput_per_gpu: float | None  # request_goodput / GPUs
    goodput_low: float | None
    goodput_high: float | None
    requests: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def point_of(summary: dict, layout: str, load: float, gpus: int, run_dir: str) -> Point:
    m = summary.get("metrics") or {}
    out_lo, out_hi = _iv(summary, "output_throughput")
    tpot_lo, tpot_hi = _iv(summary, "mean_tpot_ms")
    good_lo, good_hi = _iv(summary, "request_goodput")
    return Point(
        layout=layout,
        load=load,
        gpus=gpus,
        verdict=str(summary.get("verdict")),
        run_dir=run_dir,
        per_gpu=_div(m.get("output_throughput"), gpus),
        per_gpu_low=_div(out_lo, gpus),
        per_gpu_high=_div(out_hi, gpus),
        per_user=_inv(m.get("mean_tpot_ms")),
        per_user_low=_inv(tpot_hi),
        per_user_high=_inv(tpot_lo),
        goodput_per_gpu=_div(m.get("request_goodput"), gpus),
        goodput_low=_div(good_lo, gpus),
        goodput_high=_div(good_hi, gpus),
        requests=m.get("completed"),
    )


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point dominates (both axes higher is better), by tokens/s per user."""
    ok = [p for p in points if p.per_gpu is not None and p.per_user is not None]

    def dominated(p: Point) -> bool:
        return any(
            q.per_gpu >= p.per_gpu
            and q.per_user >= p.per_user
            and (q.per_gpu > p.per_gpu or q.per_user > p.per_user)
            for q in ok
        )

    return sorted((p for p in ok if not dominated(p)), key=lambda p: p.per_user)


def _most_goodput(points: list[Point]) -> Point | None:
    ok = [p for p in points if p.goodput_per_gpu is not None]
    return max(ok, key=lambda p: (p.goodput_per_gpu, p.per_user or 0.0), default=None)


def best_under_slo(points: list[Point]) -> Point | None:
    """The feasible (PASS) point of most goodput per GPU; None when no run met every SLO."""
    return _most_goodput([p for p in points if p.verdict == "PASS"])


def baseline(points: list[Point], spec_layout: str) -> tuple[Point | None, bool]:
    """(the spec layout's point to compare with, whether it met every SLO)."""
    own = [p for p in points if p.layout == spec_layout]
    feasible = best_under_slo(own)
    return (feasible, True) if feasible is not None else (_most_goodput(own), False)


def advantage(best: Point, base: Point, confidence: float) -> dict:
    """Goodput per GPU of ``best`` against ``base``: the change in % with its interval."""
    ch = change(
        base.goodput_per_gpu,
        best.goodput_per_gpu,
        (base.goodput_low, base.goodput_high),
        (best.goodput_low, best.goodput_high),
        confidence=confidence,
    )
    return {
        "metric": "request_goodput per GPU",
        "base": {"layout": base.layout, "load": base.load, "value": base.goodput_per_gpu},
        "best": {"layout": best.layout, "load": best.load, "value": best.goodput_per_gpu},
        "ratio": None
        if not base.goodput_per_gpu or best.goodput_per_gpu is None
        else best.goodput_per_gpu / base.goodput_per_gpu,
        "pct": ch.pct,
        "low_pct": ch.low_pct,
        "high_pct": ch.high_pct,
        "confidence": confidence,
        "basis": ch.basis,
    }
