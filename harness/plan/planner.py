"""The analytic planner: what physics allows for a spec, before any GPU is touched.

Pure arithmetic on the resolved spec (model shape, GPU facts, rank layout); no torch import,
so ``harness plan`` answers in well under a second on a laptop. Every formula is written out in
docs/formulas.md; each function's docstring gives its own.

Units: bytes and seconds. Catalogue bandwidths are GB/s (1e9 bytes/s), peaks TFLOP/s (1e12),
GPU memory GiB (2**30 bytes). Symbols: h hidden, L_s decoder layers of stage s, t = tp,
p = pp, m micro-batches in flight, d dtype bytes, V vocab, P_layer parameters of one layer.

The formulas live in four modules, one job each, re-exported here so ``planner.X`` keeps
working: ``plan_memory`` (parameters, KV cache, workspace, ε), ``plan_comm`` (expected ops,
bytes, links, comm floors), ``plan_time`` (FLOPs, HBM bytes, roofline, ``Timing``) and
``plan_bounds`` (workload shape, SLO limits, ``Bounds``, bubble). This module assembles the
``Plan``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.plan.bounds import (
    Bounds,
    WorkloadShape,
    bubble_ratio,
    slo_limits,
    workload_bounds,
    workload_shape,
)
from harness.plan.comm import (
    HEADER_EXTRA,
    SAMPLE_PAIR_BYTES,
    Links,
    comm_time_s,
    expected_comm,
    header_numel,
    links,
    pp_bytes_per_token_per_boundary,
    ring_factor,
    sampling_gather_ops,
    tp_allreduce_bytes_per_layer_per_token,
)
from harness.plan.memory import (
    KV_PAGE_TOKENS,
    LOGIT_BYTES,
    epsilon,
    kv_bytes_per_token,
    kv_slot_tokens,
    rank_params,
    stage_holds,
    token_budget,
    workspace_bytes,
)
from harness.plan.timing import Timing, compute_floor_s, stage_bytes_read, stage_flops
from harness.spec.catalog import GpuSpec
from harness.spec.layout import Layout

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "HEADER_EXTRA",
    "SAMPLE_PAIR_BYTES",
    "LOGIT_BYTES",
    "rank_params",
    "stage_holds",
    "kv_bytes_per_token",
    "kv_slot_tokens",
    "KV_PAGE_TOKENS",
    "workspace_bytes",
    "epsilon",
    "token_budget",
    "paged_kv",
    "slot_tokens",
    "forward_tokens",
    "prefill_chunk_tokens",
    "tp_allreduce_bytes_per_layer_per_token",
    "pp_bytes_per_token_per_boundary",
    "ring_factor",
    "header_numel",
    "sampling_gather_ops",
    "expected_comm",
    "Links",
    "links",
    "comm_time_s",
    "stage_flops",
    "stage_bytes_read",
    "compute_floor_s",
    "Timing",
    "bubble_ratio",
    "WorkloadShape",
    "workload_shape",
    "Bounds",
    "slo_limits",
    "workload_bounds",
    "RankPlan",
    "StagePlan",
    "CommPlan",
    "Plan",
    "seq_len",
    "forward_width",
    "plan",
]

PLAN_SCHEMA_VERSION = 1


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RankPlan:
    """One rank's memory: total = weights + workspace + KV budget; headroom = memory − total."""

    rank: int
    dp: int
    stage: int
    tp_rank: int
    node: int
    layers: int
    params: int
    weight_bytes: int
    kv_bytes_per_token: int
    workspace_bytes: int
    kv_budget_bytes: int  # kv_cache_fraction · (memory − weights − workspace), ≥ 0
    kv_token_capacity: int  # kv_budget // kv_bytes_per_token
    total_bytes: int
    memory_bytes: int
    headroom_bytes: int
    fits: bool  # weights + workspace fit and the KV budget holds one slot (seq_len tokens)


@dataclass(frozen=True)
class StagePlan:
    stage: int
    layers: int
    first_layer: int
    last_layer: int
    holds: tuple[str, ...]
    ranks: tuple[int, ...]  # replica 0
    params_per_rank: int
    weight_bytes_per_rank: int
    weight_bytes: int  # the stage's TP ranks together (one replica)
    kv_bytes_per_token_per_rank: int
    kv_token_capacity: int  # tokens the stage can cache (each rank holds its share of every token)
    tp_allreduces_per_forward: int  # 2·L_s + [s = 0], 0 when tp = 1
    tp_allreduce_bytes_per_token: int  # payload bytes per token per forward: (2·L_s + [s = 0])·h·d
    tp_link: str
    tp_time_per_token_s: float  # payload · 2(t−1)/t / link bandwidth
    pp_link: str | None  # hop to the next stage
    pp_time_per_token_s: float | None  # h·d / link bandwidth


@dataclass(frozen=True)
class CommPlan:
    tp_allreduce_bytes_per_layer_per_token: int
    tp_allreduces_per_layer: int
    tp_ring_factor: float
    pp_bytes_per_token_per_boundary: int
    pp_boundaries: int
    header_bytes: int


@dataclass(frozen=True)
class Plan:
    name: str
    model: dict
    dtype: str
    dtype_bytes: int
    gpu: dict
    cluster: dict
    layout: dict
    run: dict
    params_total: int
    model_weight_bytes: int  # one replica, TP-replicated norms counted on each rank
    ranks: tuple[RankPlan, ...]
    stages: tuple[StagePlan, ...]
    weight_epsilon: float
    total_epsilon: float
    comm: CommPlan
    bounds: Bounds
    fits: bool
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["schema_version"] = PLAN_SCHEMA_VERSION
        return d

    def rank(self, rank: int) -> RankPlan:
        return self.ranks[rank]

    def kv_slots(self) -> int:
        """KV slots per DP replica, as the reference engine allocates them: one per sequence of
        every micro-batch in flight (m · max_batch), within what the smallest rank's KV budget
        holds (⌊min_r kv_token_capacity_r / slot_tokens⌋), and at least one."""
        want = self.run["micro_batches"] * self.run["max_batch"]
        capacity = min(r.kv_token_capacity for r in self.ranks) // self.run["slot_tokens"]
        return max(1, min(want, capacity))


def _link_name(inter: bool, gpu: GpuSpec) -> str:
    return (
        f"inter-node {gpu.internode_gbps:g} GB/s" if inter else f"intra-node {gpu.link_gbps:g} GB/s"
    )


def seq_len(spec) -> int:
    """KV slot length, as the runtime allocates it: run.max_seq_len, else the model's context."""
    return spec.run.max_seq_len or spec.shape.max_context


def paged_kv(spec) -> bool:
    """The paged flash kernel serves the spec's device: a GPU (not the CPU twin) in 16-bit."""
    hd = spec.shape.head_dim
    return (
        spec.gpu.name != "cpu"
        and spec.run.device != "cpu"
        and spec.dtype_bytes == 2
        and hd % 8 == 0
        and hd <= 256
    )


def slot_tokens(spec) -> int:
    """Positions a KV slot is allocated with: seq_len, in whole pages when the KV is paged."""
    return kv_slot_tokens(seq_len(spec), paged_kv(spec))


def forward_width(spec, wl: WorkloadShape) -> int:
    """Most tokens one row of a forward carries: the prefill chunk, else the longest prompt
    (bounded), else the slot; never more than the token budget."""
    if spec.run.prefill_chunk:
        return min(spec.run.prefill_chunk, seq_len(spec), token_budget(spec))
    return min(wl.input_max or seq_len(spec), seq_len(spec), token_budget(spec))


def forward_tokens(spec, wl: WorkloadShape) -> int:
    """Most tokens one forward carries (packed): min(token budget, max_batch · forward_width)."""
    return min(token_budget(spec), spec.run.max_batch * forward_width(spec, wl))


def prefill_chunk_tokens(spec) -> int:
    """Tokens of one prompt per step when the request is alone: the token budget, capped by
    run.prefill_chunk."""
    return min(token_budget(spec), spec.run.prefill_chunk or token_budget(spec))


def plan(spec, layout: Layout | None = None) -> Plan:
    """The whole plan of a validated spec; ``layout`` replaces the spec's (as ``--search`` does)."""
    lay = layout or spec.layout
    shape, gpu, d, r = spec.shape, spec.gpu, spec.dtype_bytes, spec.run
    per_node = spec.cluster.gpus_per_node
    wl = workload_shape(spec.workload)
    width = forward_width(spec, wl)
    n_fwd = forward_tokens(spec, wl)
    slot = slot_tokens(spec)
    mem = gpu.memory_bytes
    ranks, problems = [], []
    for k in range(lay.world_size):
        pl = lay.place(k)
        last = pl.stage == lay.pp - 1
        params = rank_params(shape, lay, pl.stage)
        w = params * d
        kvt = kv_bytes_per_token(shape, lay, pl.stage, d)
        ws = workspace_bytes(shape, lay.tp, last, d, r.max_batch, n_fwd)
        free = mem - w - ws
        budget = int(r.kv_cache_fraction * free) if free > 0 else 0
        cap = budget // kvt
        total = w + ws + budget
        fits = free > 0 and cap >= slot
        ranks.append(
            RankPlan(
                k,
                pl.dp,
                pl.stage,
                pl.tp,
                k // per_node,
                lay.layer_split[pl.stage],
                params,
                w,
                kvt,
                ws,
                budget,
                cap,
                total,
                mem,
                mem - total,
                fits,
            )
        )
        if not fits and pl.dp == 0 and pl.tp == 0:
            why = (
                f"weights {w / 1e9:.1f} GB + workspace {ws / 1e9:.1f} GB exceed {mem / 1e9:.1f} GB"
                if free <= 0
                else f"KV budget holds {cap} tokens < one {slot}-token slot"
            )
            problems.append(f"stage {pl.stage} does not fit: {why}")
    lk = links(lay, gpu, per_node)
    stages = []
    ar_layer = tp_allreduce_bytes_per_layer_per_token(shape, d) if lay.tp > 1 else 0
    pp_tok = pp_bytes_per_token_per_boundary(shape, d)
    for s in range(lay.pp):
        mine = [x for x in ranks if x.stage == s and x.dp == 0]
        lr = lay.layers_of_stage(s)
        n_ar = (2 * lay.layer_split[s] + (s == 0)) if lay.tp > 1 else 0
        ar_tok = n_ar * shape.hidden * d
        stages.append(
            StagePlan(
                s,
                len(lr),
                lr.start,
                lr.stop - 1,
                stage_holds(lay, s),
                tuple(x.rank for x in mine),
                mine[0].params,
                mine[0].weight_bytes,
                sum(x.weight_bytes for x in mine),
                mine[0].kv_bytes_per_token,
                min(x.kv_token_capacity for x in mine),
                n_ar,
                ar_tok,
                _link_name(lk.tp_inter[s], gpu) if lay.tp > 1 else "none",
                ar_tok * ring_factor(lay.tp) / (lk.tp_gbps[s] * 1e9),
                _link_name(lk.pp_inter[s], gpu) if s < lay.pp - 1 else None,
                pp_tok / (lk.pp_gbps[s] * 1e9) if s < lay.pp - 1 else None,
            )
        )
    capacity = min(st.kv_token_capacity for st in stages)
    tm = Timing(shape, lay, gpu, d, r.max_batch, lk)
    m = spec.run.micro_batches or lay.pp  # spec.micro_batches, for this layout
    bounds = workload_bounds(
        tm, wl, capacity, m, spec.slo_targets, chunk=prefill_chunk_tokens(spec)
    )
    weights = [x.weight_bytes for x in ranks]
    comm = CommPlan(
        ar_layer,
        2 if lay.tp > 1 else 0,
        ring_factor(lay.tp),
        pp_tok if lay.pp > 1 else 0,
        lay.pp - 1,
        8 * header_numel(r.max_batch),
    )
    return Plan(
        name=spec.name,
        model={
            "name": shape.name,
            "hidden": shape.hidden,
            "layers": shape.num_layers,
            "heads": shape.num_heads,
            "kv_heads": shape.num_kv_heads,
            "vocab": shape.vocab,
        },
        dtype=spec.model.dtype,
        dtype_bytes=d,
        gpu={
            "name": gpu.name,
            "memory_bytes": mem,
            "hbm_gbps": gpu.hbm_gbps,
            "bf16_tflops": gpu.bf16_tflops,
            "link_gbps": gpu.link_gbps,
            "internode_gbps": gpu.internode_gbps,
        },
        cluster={"nodes": spec.cluster.nodes, "gpus_per_node": per_node},
        layout={"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
        run={
            "max_batch": r.max_batch,
            "micro_batches": m,
            "kv_cache_fraction": r.kv_cache_fraction,
            "seq_len": seq_len(spec),
            "slot_tokens": slot,
            "forward_width": width,
            "forward_tokens": n_fwd,
            "max_num_batched_tokens": token_budget(spec),
            "prefill_chunk": prefill_chunk_tokens(spec),
        },
        params_total=shape.total_params(),
        model_weight_bytes=sum(st.weight_bytes for st in stages),
        ranks=tuple(ranks),
        stages=tuple(stages),
        weight_epsilon=epsilon(weights),
        total_epsilon=epsilon(
            [x.weight_bytes + x.workspace_bytes + x.kv_budget_bytes for x in ranks]
        ),
        comm=comm,
        bounds=bounds,
        fits=all(x.fits for x in ranks),
        problems=tuple(problems) + bounds.problems,
    )
