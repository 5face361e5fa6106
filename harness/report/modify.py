""" "Nodes to modify": concrete changes to the deployment, from the run's measurements.

Pure: :func:`evidence_from_run` reads a loaded run into an :class:`Evidence`; :func:`recommend`
applies the rules below to it. Each rule fires only on measured numbers and states its predicted
effect; with no rule firing and enough measurements, the answer is "none needed"; with too few
measurements it says what could not be judged (never "none needed" by default).

Rules (thresholds are module constants):
1. Layer split. Per stage s, the compute time per step c_s and a per-layer cost
   u_s = c_s / (L_s + e_s), where e_s counts the first stage's embedding and the last stage's
   lm_head in layer equivalents (their parameters / one layer's). A new split L' minimises
   max_s (L'_s + e_s)·u_s (greedy water-filling, optimal for this separable min-max, every stage
   ≥ 1 layer). Proposed when imbalance max c / mean c > IMBALANCE and the slowest stage gets
   ≥ MIN_GAIN faster; predicted effect: the slowest stage time, which bounds the pipeline's rate.
2. Micro-batches in flight (m, p stages). Ideal bubble with equal stages: max(0, 1 − m/p).
   m < p and measured bubble > BUBBLE: raise m to p; predicted bubble b − (1 − m/p), throughput
   × (1 − b')/(1 − b). m > p and a TPOT target missed with bubble < BUBBLE_LOW: lower m to p;
   predicted TPOT × p/m (a token waits for p, not m, micro-batches per round).
3. Communication dominates. TP share = TP all-reduce time / stage compute time (mean over ranks);
   > COMM_SHARE with tp > 1: propose tp/2 × pp·2 (same GPUs; each stage half the layers at twice
   the width, half the all-reduces, none at tp = 1); predicted stage time (c − a + a') / c.
   PP share = send time / (compute + send) > COMM_SHARE with pp > 1: propose tp·2 × pp/2 when
   tp·2 divides the KV heads; predicted per-token latency − (p/2)·send per step.
4. KV capacity. When every KV slot was in use at once (max concurrent requests ≥ slots) and the
   p90 queue delay > QUEUE_MS: raise slots to ⌈1.2·λ·W⌉ (Little's law, λ = offered rate,
   W = mean service time finish − admitted); predicted TTFT p99 − p99 queue delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

IMBALANCE = 1.10
MIN_GAIN = 0.05
BUBBLE = 0.10
BUBBLE_LOW = 0.05
COMM_SHARE = 0.30
QUEUE_MS = 50.0


@dataclass
class Evidence:
    tp: int
    pp: int
    dp: int
    layer_split: tuple[int, ...]
    micro_batches: int
    stage_step_s: list[float | None] = field(default_factory=list)  # compute per step, per stage
    stage_send_step_s: list[float | None] = field(default_factory=list)
    extra_layers: list[float] = field(default_factory=list)  # e_s: embedding / lm_head in layers
    bubble_ratio: float | None = None
    tp_share: float | None = None  # TP all-reduce time / stage compute time
    # per stage all-reduce time per step
    ar_step_s: list[float | None] = field(default_factory=list)
    tpot_missed: bool = False
    tpot_p99_ms: float | None = None
    kv_slots: int | None = None
    max_concurrent: int | None = None
    queue_p90_ms: float | None = None
    queue_p99_ms: float | None = None
    ttft_p99_ms: float | None = None
    offered_rps: float | None = None
    mean_service_s: float | None = None
    kv_heads: int | None = None
    num_layers: int | None = None


@dataclass
class Change:
    rule: str  # layer_split | micro_batches | tp_pp | kv_capacity
    nodes: str  # which nodes of the deployment change
    change: str  # the concrete edit (spec field: old → new)
    effect: str  # predicted effect, with numbers
    evidence: str  # the measurements that triggered it


@dataclass
class Advice:
    changes: list[Change]
    checked: list[str]  # rules that were judged on measurements (fired or not)
    unjudged: list[str]  # rules that lacked measurements

    @property
    def none_needed(self) -> bool:
        return not self.changes and not self.unjudged


def best_split(costs: list[float], extras: list[float], total_layers: int) -> list[int]:
    """Integer layers per stage minimising max_s (L_s + e_s)·u_s, Σ L_s = total, L_s ≥ 1."""
    n = len(costs)
    split = [1] * n
    for _ in range(total_layers - n):
        s = min(range(n), key=lambda i: ((split[i] + 1 + extras[i]) * costs[i], i))
        split[s] += 1
    return split


def moves(old: list[int], new: list[int]) -> list[str]:
    """The boundary shifts from ``old`` to ``new`` as 'k layer(s) from stage a to stage b'."""
    out = []
    cum_old = cum_new = 0
    for s in range(len(old) - 1):
        cum_old += old[s]
        cum_new += new[s]
        d = cum_new - cum_old
        if d > 0:
            out.append(f"{d} layer(s) from stage {s + 1} to stage {s}")
        elif d < 0:
            out.append(f"{-d} layer(s) from stage {s} to stage {s + 1}")
    return out


def _rule_split(ev: Evidence) -> Change | None:
    c = ev.stage_step_s
    if ev.pp < 2 or not c or any(x is None or x <= 0 for x in c):
        return None
    mean = sum(c) / len(c)
    if max(c) / mean <= IMBALANCE:
        return None
    extras = ev.extra_layers or [0.0] * ev.pp
    costs = [c[s] / (ev.layer_split[s] + extras[s]) for s in range(ev.pp)]
    new = best_split(costs, extras, sum(ev.layer_split))
    t_old = max(c)
    t_new = max((new[s] + extras[s]) * costs[s] for s in range(ev.pp))
    if new == list(ev.layer_split) or t_new > t_old * (1 - MIN_GAIN):
        return None
    slow = c.index(t_old)
    return Change(
        "layer_split",
        f"PP stages {', '.join(str(s) for s in range(ev.pp) if new[s] != ev.layer_split[s])}",
        f"parallel.layer_split: {list(ev.layer_split)} → {new} (move "
        f"{'; '.join(moves(list(ev.layer_split), new))})",
        f"slowest stage {t_old * 1e3:.2f} → {t_new * 1e3:.2f} ms per step; pipeline rate bound "
        f"+{(t_old / t_new - 1) * 100:.0f} %",
        f"stage compute per step {', '.join(f'{x * 1e3:.2f}' for x in c)} ms (imbalance "
        f"{max(c) / mean:.2f}, "
        f"stage {slow} slowest; first/last stages carry embedding/lm_head)",
    )


def _rule_microbatches(ev: Evidence) -> Change | None:
    b, m, p = ev.bubble_ratio, ev.micro_batches, ev.pp
    if b is None or p < 2:
        return None
    if m < p and b > BUBBLE:
        b_new = max(0.0, b - (1 - m / p))
        gain = (1 - b_new) / (1 - b) - 1 if b < 1 else float("inf")
        return Change(
            "micro_batches",
            f"all {p} PP stages",
            f"run.micro_batches: {m} → {p}",
            f"bubble {b:.2f} → {b_new:.2f}; throughput +{gain * 100:.0f} %",
            f"measured bubble {b:.2f} with {m} micro-batch(es) in flight over {p} stages "
            f"(ideal bubble 1 − m/p = {1 - m / p:.2f})",
        )
    if m > p and ev.tpot_missed and b < BUBBLE_LOW:
        tp99 = (
            f"{ev.tpot_p99_ms:.0f} → {ev.tpot_p99_ms * p / m:.0f} ms"
            if ev.tpot_p99_ms
            else f"× {p}/{m}"
        )
        return Change(
            "micro_batches",
            f"all {p} PP stages",
            f"run.micro_batches: {m} → {p}",
            f"TPOT p99 {tp99} (each token waits for {p}, not {m}, micro-batches); rate about the "
            f"same "
            f"(the pipeline stays full)",
            f"TPOT target missed, bubble only {b:.2f} with {m} > {p} micro-batches in flight",
        )
    return None


def _rule_comm(ev: Evidence) -> Change | None:
    if (
        ev.tp > 1
        and ev.tp_share is not None
        and ev.tp_share > COMM_SHARE
        and (ev.num_layers is None or ev.pp * 2 <= ev.num_layers)
    ):
        tp2, pp2 = ev.tp // 2, ev.pp * 2
        a = ev.tp_share
        # half the layers per stage → half the all-reduces
        factor = (1 - a) + (a / 2 if tp2 > 1 else 0.0)
        return Change(
            "tp_pp",
            "TP groups → PP stages",
            f"parallel: tp {ev.tp} → {tp2}, pp {ev.pp} → {pp2} "
            f"(same {ev.tp * ev.pp * ev.dp} GPUs; parallel.layer_split re-derived)",
            f"stage time per step × {factor:.2f} (TP all-reduce "
            f"{'gone' if tp2 == 1 else 'halved'}); "
            f"{pp2 - ev.pp} more send/recv hop(s) per token",
            f"TP all-reduce is {a * 100:.0f} % of stage compute time",
        )
    sends = [x for x in ev.stage_send_step_s if x is not None]
    comp = [x for x in ev.stage_step_s if x is not None]
    if ev.pp > 1 and sends and comp and len(sends) == len(comp):
        share = sum(sends) / (sum(sends) + sum(comp))
        heads_ok = ev.kv_heads is None or ev.kv_heads % (ev.tp * 2) == 0
        if share > COMM_SHARE and ev.pp % 2 == 0 and heads_ok:
            saved = (ev.pp // 2) * (sum(sends) / len(sends))
            return Change(
                "tp_pp",
                "PP stages → TP groups",
                f"parallel: tp {ev.tp} → {ev.tp * 2}, pp {ev.pp} → {ev.pp // 2} (same GPUs)",
                f"per-token latency −{saved * 1e3:.2f} ms ({ev.pp // 2} fewer hops); TP "
                f"all-reduces added",
                f"send/recv is {share * 100:.0f} % of stage time",
            )
    return None


def _rule_kv(ev: Evidence) -> Change | None:
    if ev.kv_slots is None or ev.max_concurrent is None or ev.queue_p90_ms is None:
        return None
    if ev.max_concurrent < ev.kv_slots or ev.queue_p90_ms <= QUEUE_MS:
        return None
    need = None
    if ev.offered_rps and ev.mean_service_s:
        need = math.ceil(1.2 * ev.offered_rps * ev.mean_service_s / max(ev.dp, 1))
    target = max(need or 0, ev.kv_slots + 1)
    ttft = ""
    if ev.ttft_p99_ms is not None and ev.queue_p99_ms is not None:
        ttft = (
            f"TTFT p99 {ev.ttft_p99_ms:.0f} → ~{max(0.0, ev.ttft_p99_ms - ev.queue_p99_ms):.0f} ms"
        )
    return Change(
        "kv_capacity",
        "KV cache on every rank",
        f"KV slots per replica {ev.kv_slots} → {target} (raise run.kv_cache_fraction, lower "
        f"run.max_seq_len to the workload's longest request, or add a DP replica)",
        (ttft + "; " if ttft else "") + "queue delay → ~0 while the rate stays below capacity",
        f"all {ev.kv_slots} slots in use at once and p90 queue delay {ev.queue_p90_ms:.0f} ms"
        + (
            f"; Little's law λ·W = {ev.offered_rps:.2f}/s × {ev.mean_service_s:.2f} s"
            if need
            else ""
        ),
    )


def recommend(ev: Evidence) -> Advice:
    changes, checked, unjudged = [], [], []
    rules = (
        (
            "layer_split",
            _rule_split,
            bool(ev.stage_step_s) and all(x is not None for x in ev.stage_step_s),
        ),
        ("micro_batches", _rule_microbatches, ev.bubble_ratio is not None or ev.pp < 2),
        ("tp_pp", _rule_comm, ev.tp_share is not None or ev.tp == 1 or bool(ev.stage_send_step_s)),
        (
            "kv_capacity",
            _rule_kv,
            ev.kv_slots is not None
            and ev.queue_p90_ms is not None
            and ev.max_concurrent is not None,
        ),
    )
    for name, rule, measurable in rules:
        if name == "layer_split" and ev.pp < 2:
            checked.append(name)
            continue
        if not measurable:
            unjudged.append(name)
            continue
        checked.append(name)
        c = rule(ev)
        if c is not None:
            changes.append(c)
    return Advice(changes, checked, unjudged)


# ---------------------------------------------------------------- from a loaded run


def _max_concurrent(reqs: list) -> int | None:
    events = []
    for r in reqs:
        if r.admitted_s is None:
            continue
        events.append((r.admitted_s, 1))
        events.append((r.finish_s if r.finish_s is not None else math.inf, -1))
    if not events:
        return None
    best = cur = 0
    for _, d in sorted(
        events, key=lambda e: (e[0], e[1])
    ):  # a finish frees its slot before an admission at the same time
        cur += d
        best = max(best, cur)
    return best


def evidence_from_run(run) -> Evidence:
    from harness.report import analysis as an
    from harness.report.dag import shape_of

    lay = run.layout()
    summary, spec = run.summary, run.spec or {}
    m = (
        (summary.get("layout") or {}).get("micro_batches")
        or ((spec.get("run") or {}).get("micro_batches"))
        or lay.pp
    )
    ev = Evidence(lay.tp, lay.pp, lay.dp, tuple(lay.layer_split), int(m))
    stats = an.stage_stats(run)
    steps = an.steps_per_rank(run.comm, run.stages)
    by_stage_steps: dict[int, int] = {}
    for r in range(lay.world_size):
        s = lay.place(r).stage
        by_stage_steps[s] = max(by_stage_steps.get(s, 0), steps.get(r, 0))
    if len(stats) == lay.pp:
        ev.stage_step_s = [
            (s["compute_s"] / by_stage_steps[s["stage"]])
            if by_stage_steps.get(s["stage"])
            else None
            for s in stats
        ]
        ev.stage_send_step_s = [
            (s.get("send_s") or 0.0) / by_stage_steps[s["stage"]]
            if by_stage_steps.get(s["stage"])
            else None
            for s in stats
        ]
        ev.bubble_ratio = an.run_bubble(stats)
    shape = shape_of(spec)
    if shape is not None:
        layer = shape.layer_params()
        head = shape.vocab * shape.hidden / layer
        ev.extra_layers = [(head if s == lay.pp - 1 else 0.0) for s in range(lay.pp)]
        ev.kv_heads, ev.num_layers = shape.num_kv_heads, shape.num_layers
    only = an.measured_steps(run.stages) or None
    ar = [
        a
        for a in an.comm_by(run.comm, ("rank", "group", "op"), only)
        if a["group"] == "tp" and a["op"] == "all_reduce"
    ]
    comp = {int(s["stage"]): s["compute_s"] for s in stats}
    if lay.tp > 1 and ar and comp and all(a["time_s"] is not None for a in ar):
        shares = []
        for a in ar:
            c = comp.get(lay.place(a["rank"]).stage)
            if c:
                shares.append(a["time_s"] / c)
        ev.tp_share = sum(shares) / len(shares) if shares else None
    metrics = summary.get("metrics") or {}
    ev.tpot_missed = any(
        r.get("passed") is False and "tpot" in str(r.get("target"))
        for r in summary.get("slo") or []
    )
    ev.tpot_p99_ms = metrics.get("p99_tpot_ms")
    ev.ttft_p99_ms = metrics.get("p99_ttft_ms")
    ev.queue_p90_ms = metrics.get("p90_queue_ms")
    ev.queue_p99_ms = metrics.get("p99_queue_ms")
    slots = (summary.get("layout") or {}).get("kv_slots_per_replica") or (
        summary.get("predicted") or {}
    ).get("kv_slots")
    ev.kv_slots = int(slots) if slots else None
    recs = [r for r in an.records(run.requests) if not r.warmup]
    ev.max_concurrent = _max_concurrent(recs)
    served = [
        r.finish_s - r.admitted_s
        for r in recs
        if r.finish_s is not None and r.admitted_s is not None
    ]
    ev.mean_service_s = sum(served) / len(served) if served else None
    ev.offered_rps = (spec.get("workload") or {}).get("rate_rps")
    return ev
