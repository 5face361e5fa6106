"""Planner, workload bounds: the workload's mean and largest lengths, SLO targets as limits, and
the TPOT/TTFT/E2E floors and throughput bound they imply (``Bounds``); the pipeline bubble.

Pure arithmetic, no torch. Units and symbols as in ``harness.plan.planner``; formulas in
docs/formulas.md."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.plan.timing import Timing


def bubble_ratio(pp: int, micro_batches: int) -> float:
    """Pipeline bubble for m micro-batches over p stages: (p−1)/(m+p−1)."""
    return (pp - 1) / (micro_batches + pp - 1)


@dataclass(frozen=True)
class WorkloadShape:
    """Mean and largest lengths of a workload (clipping ignored: means are the distributions')."""

    input_mean: float
    output_mean: float
    input_max: int | None  # None: unbounded (normal/lognormal without max)
    output_max: int | None
    arrival: str
    rate_rps: float | None
    concurrency: int | None


def _dist_mean(d) -> float:
    """fixed: value; uniform: (min + max)/2; normal and lognormal: mean (lognormal's is
    arithmetic)."""
    return (
        float(d.value)
        if d.dist == "fixed"
        else (d.min + d.max) / 2
        if d.dist == "uniform"
        else float(d.mean)
    )


def _dist_max(d) -> int | None:
    return d.value if d.dist == "fixed" else d.max


def workload_shape(w) -> WorkloadShape:
    """From a spec's ``workload`` section; a trace's lengths are read from the file itself."""
    if w.trace:
        from harness.spec.workload import load_trace  # numpy only, and only for traces

        reqs = load_trace(w.trace, block_size=getattr(w, "trace_block_size", 512))
        if not reqs:
            return WorkloadShape(1.0, 1.0, 1, 1, w.arrival, w.rate_rps, w.concurrency)
        ins, outs = [r.input_len for r in reqs], [r.output_len for r in reqs]
        span = reqs[-1].arrival_s - reqs[0].arrival_s
        rate = (len(reqs) - 1) / span if span > 0 else w.rate_rps
        return WorkloadShape(
            sum(ins) / len(ins),
            sum(outs) / len(outs),
            max(ins),
            max(outs),
            w.arrival,
            rate,
            w.concurrency,
        )
    return WorkloadShape(
        _dist_mean(w.input_len),
        _dist_mean(w.output_len),
        _dist_max(w.input_len),
        _dist_max(w.output_len),
        w.arrival,
        w.rate_rps if w.arrival != "closed" else None,
        w.concurrency if w.arrival == "closed" else None,
    )


@dataclass(frozen=True)
class Bounds:
    """Bounds for the spec's workload at mean lengths (Lin, Lout); B rows per micro-batch.

    c = Lin + Lout/2 (mean context while decoding); step_s(B) = latency of stage s for B rows × 1
    token; occ_s likewise with occupancy.
    - kv_rows_limit = ⌊capacity_tokens / (m·(Lin + Lout))⌋; decode_rows B = min(max_batch, that)
    - tpot_floor = Σ_s step_s(1): one request alone
    - tpot_at_rows(B) = max(Σ_s step_s(B), m·max_s occ_s(B)): every micro-batch holding B rows
    - ttft_floor = Σ_k Σ_s prefill latency of chunk k of one Lin-token prompt: chunks of
      ``chunk`` tokens (the token budget, capped by run.prefill_chunk; one chunk when Lin fits),
      chunk k after k·chunk cached tokens, one after the other (a sequence is in one micro-batch
      at a time); e2e_floor = ttft + (Lout−1)·tpot
    - per request, a replica spends ≥ max(max_s [pre_occ_s(Lin) + Lout·occ_s(B)/B] (pre_occ: Σ over
    chunks),
      Lout·Σ_s step_s(B)/(m·B)) (the busiest stage; the m micro-batches' round trip);
      rps_bound = dp / that (closed loop: also ≤ concurrency / e2e_floor)
    - slo_rows: the largest B whose tpot_at_rows (and e2e) meets the targets; rps_slo = the
      bound at slo_rows (0 when no B meets them or TTFT cannot).
    The bubble (p−1)/(m+p−1) is reported, not applied: a serving pipeline that keeps m ≥ p
    micro-batches cycling has no fill/drain per batch; the round-trip term above covers m < p.
    """

    input_mean: float
    output_mean: float
    prefill_chunk: int  # tokens of a prompt per step (the mean prompt's chunks)
    prefill_chunks: int
    decode_context: float
    micro_batches: int
    bubble_ratio: float
    kv_rows_limit: int
    decode_rows: int
    decode_step_s: tuple[float, ...]
    prefill_per_token_s: tuple[float, ...]
    tpot_floor_s: float
    tpot_at_rows_s: float
    ttft_floor_s: float
    e2e_floor_s: float
    rps_bound: float
    slo_rows: int | None
    rps_slo: float | None
    offered_rps: float | None
    targets: dict
    problems: tuple[str, ...]


def slo_limits(targets) -> dict:
    """The tightest target per kind, in seconds / requests per second: tpot (tpot or itl), ttft,
    e2e, throughput_rps (throughput or goodput)."""
    out: dict = {}
    for t in targets:
        kind = {"itl": "tpot"}.get(t.metric, t.metric)
        if t.is_latency and kind in ("tpot", "ttft", "e2e"):
            out[f"{kind}_s"] = min(out.get(f"{kind}_s", math.inf), t.value / 1e3)
        elif t.metric in ("throughput_rps", "goodput_rps"):
            out["throughput_rps"] = max(out.get("throughput_rps", 0.0), t.value)
    return out


def _chunks(n_in: int, chunk: int | None) -> list[tuple[int, int]]:
    """(tokens, tokens already cached) of each step that prefills an n_in-token prompt."""
    c = max(1, min(chunk or n_in, n_in))
    return [(min(c, n_in - k), k) for k in range(0, n_in, c)]


def workload_bounds(
    tm: Timing,
    wl: WorkloadShape,
    capacity_tokens: int,
    micro_batches: int,
    targets=(),
    chunk: int | None = None,
) -> Bounds:
    lay, m = tm.layout, micro_batches
    lin, lout = max(wl.input_mean, 1.0), max(wl.output_mean, 1.0)
    c = lin + lout / 2
    stages = range(lay.pp)
    kv_rows = int(capacity_tokens // (m * (lin + lout)))
    rows_cap = tm.max_batch
    if (
        wl.concurrency is not None
    ):  # closed loop: at most `concurrency` sequences over dp·m micro-batches
        rows_cap = min(rows_cap, max(1, math.ceil(wl.concurrency / (lay.dp * m))))
    b_max = max(1, min(rows_cap, kv_rows))
    n_in = max(1, round(lin))
    steps = _chunks(n_in, chunk)
    pre_lat = [sum(tm.latency(s, 1, n, float(k)) for n, k in steps) for s in stages]
    pre_occ = [sum(tm.occupancy(s, 1, n, float(k)) for n, k in steps) for s in stages]

    def step(b: int) -> list[float]:
        return [tm.latency(s, b, 1, c) for s in stages]

    def tpot_at(b: int) -> float:
        return max(sum(step(b)), m * max(tm.occupancy(s, b, 1, c) for s in stages))

    ttft = sum(pre_lat)
    tpot1 = sum(step(1))
    e2e = ttft + (lout - 1) * tpot1

    def rps(b: int) -> float:
        busiest = max(pre_occ[s] + lout * tm.occupancy(s, b, 1, c) / b for s in stages)
        per_req = max(busiest, lout * sum(step(b)) / (m * b))
        r = lay.dp / per_req
        return min(r, wl.concurrency / e2e) if wl.concurrency else r

    lim = slo_limits(targets)
    problems = []
    if kv_rows < 1 and capacity_tokens > 0:  # 0: the plan already says the weights do not fit
        problems.append(
            f"KV cache holds {capacity_tokens} tokens per replica: fewer than {m} micro-batches "
            f"x one {lin + lout:.0f}-token request"
        )

    def meets(b: int) -> bool:
        t = tpot_at(b)
        return t <= lim.get("tpot_s", math.inf) and ttft + (lout - 1) * t <= lim.get(
            "e2e_s", math.inf
        )

    slo_rows = None
    rps_slo = None
    if targets:
        lo, hi = 0, b_max  # largest b in 1..b_max that meets (tpot_at grows with b)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if meets(mid) else (lo, mid - 1)
        slo_rows = lo or None
        if "tpot_s" in lim and tpot1 > lim["tpot_s"]:
            problems.append(f"TPOT floor {tpot1 * 1e3:.1f} ms > target {lim['tpot_s'] * 1e3:g} ms")
        elif slo_rows is None:
            problems.append(
                f"no batch meets the TPOT/E2E targets with {m} micro-batches in flight "
                f"(TPOT at 1 row {tpot_at(1) * 1e3:.1f} ms)"
            )
        if "ttft_s" in lim and ttft > lim["ttft_s"]:
            problems.append(f"TTFT floor {ttft * 1e3:.1f} ms > target {lim['ttft_s'] * 1e3:g} ms")
        ok = slo_rows is not None and not (("ttft_s" in lim) and ttft > lim["ttft_s"])
        rps_slo = rps(slo_rows) if ok else 0.0
        if "throughput_rps" in lim and rps_slo < lim["throughput_rps"] and kv_rows >= 1:
            problems.append(
                f"capacity bound {rps_slo:.2f} RPS < target {lim['throughput_rps']:g} RPS"
            )
    return Bounds(
        lin,
        lout,
        steps[0][0],
        len(steps),
        c,
        m,
        bubble_ratio(lay.pp, m),
        kv_rows,
        b_max,
        tuple(step(b_max)),
        tuple(x / n_in for x in pre_lat),
        tpot1,
        tpot_at(b_max),
        ttft,
        e2e,
        rps(b_max),
        slo_rows,
        rps_slo,
        wl.rate_rps,
        {k: v for k, v in lim.items()},
        tuple(problems),
    )
