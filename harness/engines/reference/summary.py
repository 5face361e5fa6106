"""Rank payloads -> the reference engine's result: tables, measured claims, cross-checks (pure; rank
0 calls it).

Measured claim values (the ids of harness.verdicts.claims):
- throughput_rps: completed non-warm-up requests / measured duration (filled in by results.summary)
- bubble_ratio: mean over stages of idle/wall on the measured steps (measure.stages)
- memory_per_gpu_gb: max over ranks of the weight bytes the rank holds / 1e9
- memory_balance_epsilon: max/mean − 1 of per-rank weight bytes
- stage_memory_gb: per stage, the weight bytes of its ranks (one replica) / 1e9
- model_memory_gb: weight bytes of one replica / 1e9 (RMSNorm weights are replicated per TP rank)
- tp_allreduce_bytes_per_layer: bytes of the TP all-reduces a decoder layer issues per token
  (all-reduce bytes of a step / padded tokens of the step, × calls per layer)
- pp_sendrecv_bytes_per_stage: activation bytes sent across one boundary per token
- gpu_utilization_pct, nvlink_utilization_pct: NVML means (GPU only; None on the CPU twin)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.engines.base import EngineResult
from harness.engines.reference.loop import STEP_COLUMNS
from harness.measure.comm_stats import per_group_op, with_bandwidth
from harness.measure.metrics import RequestRecord
from harness.measure.nvml import summarize_nvml_by_node
from harness.measure.stages import pipeline_summary
from harness.plan import planner
from harness.spec.catalog import gpu_label


@dataclass
class RankPayload:
    rank: int
    dp: int
    stage: int
    tp: int
    coordinator: bool
    hostname: str
    param_bytes: int
    kv_bytes: int
    num_slots: int
    accelerate_weight_bytes: int | None = (
        None  # accelerate's count of this rank's meta-device stage
    )
    finished: bool = True
    t0: float | None = None
    wall_s: float | None = None
    warmup_s: float | None = None
    warmup_steps: int = 0
    records: list[dict] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    steps: list[tuple] = field(default_factory=list)
    nvml_rows: list[dict] = field(default_factory=list)
    nvml_note: str | None = None
    graphs_note: str | None = None  # run.cuda_graphs asked for where it does nothing
    all_reduce: str = "gloo"  # how this rank's TP all-reduces went: shm | gloo | nccl
    all_reduce_note: str | None = None  # why run.cpu_all_reduce: shm fell back to gloo
    comm_rows: list[dict] = field(default_factory=list)
    stage_rows: list[dict] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    sequential: dict | None = None  # slo.until_decided: the rule's looks (the coordinator's)


def _gb(b: float | None) -> float | None:
    return None if b is None else b / 1e9


def _measured_steps(payloads) -> dict[tuple[int, int], dict]:
    """(replica, step) -> the coordinator's step row, measured (non-warm-up) steps only."""
    out = {}
    for p in payloads:
        for row in p.steps:
            d = dict(zip(STEP_COLUMNS, row))
            if not d["warmup"]:
                out[(d["replica"], d["step"])] = d
    return out


def comm_cross_checks(spec, payloads, steps: dict) -> list[dict]:
    """Traced TP/PP ops of every measured step on every rank vs the planner's formulas, exactly."""
    expected = defaultdict(lambda: [0, 0])
    measured = defaultdict(lambda: [0, 0])
    for p in payloads:
        for (replica, step), s in steps.items():
            if replica != p.dp:
                continue
            exp = planner.expected_comm(
                spec.shape,
                spec.layout,
                spec.dtype_bytes,
                spec.run.max_batch,
                rows=s["n_rows"],
                tokens=1,
                total_tokens=s["padded_tokens"],
            )
            for (stage, tp_rank, op, group), v in exp.items():
                if stage == p.stage and tp_rank in (None, p.tp):
                    key = (p.stage, op, group)
                    expected[key][0] += v["count"]
                    expected[key][1] += v["bytes"]
        for r in p.comm_rows:
            if r["step"] is not None and (p.dp, r["step"]) in steps and r["group"] in ("tp", "pp"):
                key = (p.stage, r["op"], r["group"])
                measured[key][0] += 1
                measured[key][1] += r["bytes"]
    checks = []
    for key in sorted(set(expected) | set(measured)):
        e, m = expected.get(key, [0, 0]), measured.get(key, [0, 0])
        stage, op, group = key
        checks.append(
            {
                "name": f"comm stage {stage} {group} {op}",
                "expected": {"count": e[0], "bytes": e[1]},
                "measured": {"count": m[0], "bytes": m[1]},
                "ok": e == m,
                "detail": "planner formula vs traced ops, all measured steps, all ranks of the "
                "stage",
            }
        )
    return checks


def _per_token_comm(spec, payloads, steps) -> tuple[float | None, float | None]:
    """Measured TP all-reduce bytes per layer per token, and PP activation bytes per token per
    boundary."""
    ar_per_layer, pp_per_token = [], []
    for p in payloads:
        layers = spec.layout.layer_split[p.stage]
        by_step = defaultdict(list)
        for r in p.comm_rows:
            if (p.dp, r["step"]) in steps:
                by_step[r["step"]].append(r)
        for step, rows in by_step.items():
            tokens = steps[(p.dp, step)]["padded_tokens"]
            ars = [r for r in rows if r["op"] == "all_reduce" and r["group"] == "tp"]
            if ars and layers:
                # stage 0: one for the embedding
                layer_calls = len(ars) - (1 if p.stage == 0 else 0)
                ar_per_layer.append(ars[-1]["bytes"] / tokens * layer_calls / layers)
            acts = [
                r
                for r in rows
                if r["op"] == "send" and r["group"] == "pp" and r["dtype"] != "int64"
            ]
            for r in acts:
                pp_per_token.append(r["bytes"] / tokens)
    avg = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return avg(ar_per_layer), avg(pp_per_token)


def reference_result(
    spec, plan, payloads: list[RankPayload], *, complete: bool, reason: str | None
) -> EngineResult:
    """Every rank's payload (gathered on rank 0) → the engine's result: request records, tables,
    measured claim values, stage statistics and the traced-vs-planner cross-checks."""
    payloads = sorted(payloads, key=lambda p: p.rank)
    coordinators = [p for p in payloads if p.coordinator]
    records = [RequestRecord.from_dict(r) for p in coordinators for r in p.records]
    steps = _measured_steps(payloads)

    # Stage timing on measured steps only; times relative to each replica's t0.
    t0_of = {p.dp: p.t0 for p in coordinators}
    stage_rows = []
    for p in payloads:
        base = t0_of.get(p.dp) or 0.0
        for r in p.stage_rows:
            if (p.dp, r["step"]) not in steps:
                continue
            stage_rows.append(
                {
                    "rank": p.rank,
                    "dp": p.dp,
                    "stage": p.stage,
                    "tp": p.tp,
                    "step": r["step"],
                    **{
                        f"{k}_s": r[k] - base
                        for k in ("t_recv_start", "t_recv_end", "t_compute_end", "t_send_end")
                    },
                }
            )
    pipe = pipeline_summary(stage_rows)

    checks = comm_cross_checks(spec, payloads, steps)
    ar_layer, pp_token = _per_token_comm(spec, payloads, steps)

    weights = [p.param_bytes for p in payloads]
    replica0 = [p for p in payloads if p.dp == 0]
    stage_mem = [
        sum(p.param_bytes for p in replica0 if p.stage == s) for s in range(spec.layout.pp)
    ]
    mean_w = sum(weights) / len(weights)
    plan_ranks = {r.rank: r for r in plan.ranks}
    for p in payloads:
        exp = plan_ranks[p.rank].weight_bytes
        checks.append(
            {
                "name": f"weights rank {p.rank}",
                "expected": exp,
                "measured": p.param_bytes,
                "ok": exp == p.param_bytes,
                "detail": "planner weight bytes vs parameters built",
            }
        )
        if p.accelerate_weight_bytes is not None:
            checks.append(
                {
                    "name": f"weights rank {p.rank} (accelerate)",
                    "expected": exp,
                    "measured": p.accelerate_weight_bytes,
                    "ok": exp == p.accelerate_weight_bytes,
                    "detail": "planner formula vs accelerate compute_module_sizes of the "
                    "meta-device stage",
                }
            )

    nvml_rows = [dict(r, node=p.hostname) for p in payloads for r in p.nvml_rows]
    nvml = summarize_nvml_by_node(nvml_rows)
    gpu_util = [
        d["mean_gpu_util_pct"] for d in nvml.values() if d.get("mean_gpu_util_pct") is not None
    ]
    link_bps = spec.gpu.link_gbps * 1e9
    nvlink = [
        (d.get("mean_nvlink_tx_bytes_per_s") or 0) / link_bps * 100
        for d in nvml.values()
        if d.get("mean_nvlink_tx_bytes_per_s") is not None
    ]
    cuda = any(p.memory.get("source") == "torch.cuda" for p in payloads)
    measured = {
        "total_gpus": len(payloads),
        "bubble_ratio": pipe["bubble_ratio"],
        "memory_per_gpu_gb": _gb(max(weights)),
        "memory_balance_epsilon": max(weights) / mean_w - 1 if mean_w else None,
        "stage_memory_gb": [_gb(b) for b in stage_mem],
        "model_memory_gb": _gb(sum(p.param_bytes for p in replica0)),
        "tp_allreduce_bytes_per_layer": ar_layer,
        "pp_sendrecv_bytes_per_stage": pp_token,
        "gpu_utilization_pct": sum(gpu_util) / len(gpu_util) if gpu_util else None,
        "nvlink_utilization_pct": sum(nvlink) / len(nvlink) if nvlink else None,
    }
    notes = sorted({p.nvml_note for p in payloads if p.nvml_note})
    notes += sorted({p.graphs_note for p in payloads if p.graphs_note})
    notes += sorted({p.all_reduce_note for p in payloads if p.all_reduce_note})
    # hardware.gpu from the devices the ranks ran on, never from the spec (an H200 spec run on an
    # H100 is an H100 run, and no evidence for H200 claims)
    names = [p.memory.get("device_name") or ("cuda" if cuda else "cpu") for p in payloads]
    gpu, mismatch = gpu_label(spec.gpu.name, names)
    if mismatch:
        notes.append(mismatch)
    if any(p.accelerate_weight_bytes is None for p in payloads):
        notes.append("weights not counted a third way: accelerate is not installed where it ran")
    if not cuda:
        notes.append(
            "CPU twin: times and rates are of the tiny model on CPU ranks, not of the GPU "
            "deployment"
        )
    hosts = sorted({p.hostname for p in payloads})
    tables = {
        "steps": [dict(zip(STEP_COLUMNS, row)) for p in coordinators for row in p.steps],
        "comm": with_bandwidth([r for p in payloads for r in p.comm_rows]),
        "stages": stage_rows,
        "nvml": nvml_rows,
        "memory": [
            {
                "rank": p.rank,
                "dp": p.dp,
                "stage": p.stage,
                "tp": p.tp,
                "param_bytes": p.param_bytes,
                "kv_bytes": p.kv_bytes,
                "peak_bytes": p.memory.get("max_memory_allocated_bytes")
                or p.memory.get("peak_rss_bytes"),
                "predicted_weight_bytes": plan_ranks[p.rank].weight_bytes,
                "predicted_kv_bytes": plan_ranks[p.rank].kv_budget_bytes,
            }
            for p in payloads
        ],
    }
    return EngineResult(
        records=records,
        complete=complete,
        incomplete_reason=reason,
        tokens={rid: list(toks) for p in coordinators for rid, toks in p.outputs.items()}
        if spec.run.record_tokens
        else None,
        wall_s=max((p.wall_s or 0.0) for p in coordinators) if coordinators else None,
        warmup_s=max((p.warmup_s or 0.0) for p in coordinators) if coordinators else None,
        hardware={
            "gpu": gpu,
            "gpu_name": payloads[0].memory.get("device_name") or ("cuda" if cuda else "cpu"),
            "total_gpus": len(payloads),
            "nodes": len(hosts),
            "hosts": hosts,
            "backend": "nccl" if cuda else "gloo",
            # the TP all-reduces' transport: one value, or "shm+gloo" where some groups fell back
            "tp_all_reduce": "+".join(sorted({p.all_reduce for p in payloads}, reverse=True)),
        },
        layout={
            "tp": spec.layout.tp,
            "pp": spec.layout.pp,
            "dp": spec.layout.dp,
            "layer_split": list(spec.layout.layer_split),
            "micro_batches": spec.micro_batches,
            "kv_slots_per_replica": coordinators[0].num_slots if coordinators else None,
        },
        measured=measured,
        extra={
            "stage_stats": pipe["stages"],
            "stage_imbalance": pipe["imbalance"],
            "comm": per_group_op(
                [r for p in payloads for r in p.comm_rows if (p.dp, r["step"]) in steps]
            ),
            "cross_checks": checks,
            "notes": notes,
            **{"sequential": p.sequential for p in coordinators if p.sequential is not None},
        },
        tables=tables,
    )
