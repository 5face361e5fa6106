"""The analytic planner: what physics allows for a spec, before any GPU is touched.

Pure arithmetic on the resolved spec (model shape, GPU facts, rank layout); no torch import,
so ``harness plan`` answers in well under a second on a laptop. Every formula is written out in
docs/formulas.md; each function's docstring gives its own.

Units: bytes and seconds. Catalogue bandwidths are GB/s (1e9 bytes/s), peaks TFLOP/s (1e12),
GPU memory GiB (2**30 bytes). Symbols: h hidden, L_s decoder layers of stage s, t = tp,
p = pp, m micro-batches in flight, d dtype bytes, V vocab, P_layer parameters of one layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.catalog import GpuSpec, ModelShape
from harness.layout import Layout

PLAN_SCHEMA_VERSION = 1
HEADER_EXTRA = 4            # int64 step header: 4 fields + 3 per row slot (see header_numel)
SAMPLE_PAIR_BYTES = 16     # greedy sampling gathers (local max, global id) per row as 2 float64
LOGIT_BYTES = 4             # logits are kept in fp32 for sampling


# ---------------------------------------------------------------- memory

def rank_params(shape: ModelShape, layout: Layout, stage: int) -> int:
    """Parameters held by one TP rank of ``stage``.

    L_s·(P_layer − 2h)/t + L_s·2h + [first] V·h/t + [last] (V·h/t + h): the matmul weights of a
    layer are split over TP, its two RMSNorm weights are replicated on every TP rank, the
    embedding and lm_head are vocab-parallel (V/t rows each), the final norm is replicated.
    A tied lm_head is the embedding itself: counted once when stage 0 is also the last stage.
    """
    t, h, layers = layout.tp, shape.hidden, layout.layer_split[stage]
    n = layers * (shape.layer_params() - 2 * h) // t + layers * 2 * h
    first, last = stage == 0, stage == layout.pp - 1
    if first:
        n += shape.vocab * h // t
    if last:
        n += h
        if not (shape.tie_embeddings and first):
            n += shape.vocab * h // t
    return n


def stage_holds(layout: Layout, stage: int) -> tuple[str, ...]:
    out = ["embedding"] if stage == 0 else []
    return tuple(out + (["final_norm", "lm_head"] if stage == layout.pp - 1 else []))


def kv_bytes_per_token(shape: ModelShape, layout: Layout, stage: int, dtype_bytes: int) -> int:
    """KV-cache bytes one token costs on one TP rank of ``stage``: 2 (K, V) · L_s · (kv_heads/t) · head_dim · d."""
    return 2 * layout.layer_split[stage] * (shape.num_kv_heads // layout.tp) * shape.head_dim * dtype_bytes


def workspace_bytes(shape: ModelShape, tp: int, last: bool, dtype_bytes: int, rows: int, width: int) -> int:
    """Transient memory of the widest forward: N = rows·width padded tokens.

    activations = N · (2h + 3·I/t) · d — the residual stream and the layer input (2h) plus the
    MLP's gate, up and their product (3·I/t), the peak inside a decoder layer (attention's q, k,
    v and output are smaller for Llama; flash/memory-efficient attention is assumed, so no
    width² score matrix). The last stage adds rows · V/t · 4 bytes of fp32 logits (the last
    position of each row). The KV-cache fraction (< 1) leaves room for what this misses
    (CUDA context, communicator buffers, allocator fragmentation).
    """
    n = rows * width
    act = n * (2 * shape.hidden + 3 * shape.intermediate // tp) * dtype_bytes
    return act + (rows * (shape.vocab // tp) * LOGIT_BYTES if last else 0)


def epsilon(values: list[float]) -> float:
    """Imbalance ε = max/mean − 1 (0 when perfectly balanced)."""
    mean = sum(values) / len(values)
    return max(values) / mean - 1.0 if mean else 0.0


# ---------------------------------------------------------------- communication

def tp_allreduce_bytes_per_layer_per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """2 all-reduces per decoder layer (after o_proj, after down_proj) of h elements per token: 2·h·d."""
    return 2 * shape.hidden * dtype_bytes


def pp_bytes_per_token_per_boundary(shape: ModelShape, dtype_bytes: int) -> int:
    """The hidden state crossing one stage boundary per token: h·d."""
    return shape.hidden * dtype_bytes


def ring_factor(n: int) -> float:
    """Ring all-reduce bus factor 2(n−1)/n: bytes each rank moves per byte of payload."""
    return 2 * (n - 1) / n if n > 1 else 0.0


def bubble_ratio(pp: int, micro_batches: int) -> float:
    """Pipeline bubble for m micro-batches over p stages: (p−1)/(m+p−1)."""
    return (pp - 1) / (micro_batches + pp - 1)


def header_numel(max_batch: int) -> int:
    """int64 elements of a step header: 4 + 3·max_batch."""
    return HEADER_EXTRA + 3 * max_batch


def sampling_gather_ops(rows: int) -> list[tuple[str, int]]:
    """The last stage's greedy sampling over vocab-parallel logits: ONE all_gather over TP of a
    [rows, 2] float64 tensor (each rank's per-row max and its global vocab id; ids < 2^53 are exact
    in float64): [(dtype, bytes)] = [("float64", 16·rows)]. One op, not two: half the latency."""
    return [("float64", rows * SAMPLE_PAIR_BYTES)]


def expected_comm(shape: ModelShape, layout: Layout, dtype_bytes: int, max_batch: int,
                  rows: int, tokens: int) -> dict[tuple[int, int | None, str, str], dict[str, int]]:
    """Ops ONE rank issues for one micro-batch forward of ``rows`` × ``tokens`` padded tokens.

    Key (stage, tp_rank, op, group); tp_rank None means every TP rank of the stage, 0 only TP
    rank 0. Value {count, bytes}: ops and the sum of their local tensor bytes. A group of one
    rank issues nothing. With B = rows, T = tokens, H = 8·(4 + 3·max_batch) header bytes:
      TP (t > 1): all_reduce (2·L_s + [s = 0]) × B·T·h·d  (the +1: vocab-parallel embedding);
        stage 0: broadcast 2 ops, H + 8·B·T (header, token ids);
        last stage: all_gather 1 op, 16·B (per row: local max and global id as 2 float64).
      PP (p > 1): stage s < p−1 sends 2 ops, H + B·T·h·d, to the same TP rank of s+1, which
        records 2 recvs of the same bytes; the last stage's TP rank 0 sends H + 8·B (header,
        sampled tokens) to stage 0's TP rank 0, which records the 2 recvs.
    """
    out: dict[tuple[int, int | None, str, str], dict[str, int]] = {}
    t, p = layout.tp, layout.pp
    act = rows * tokens * shape.hidden * dtype_bytes
    header = 8 * header_numel(max_batch)
    for s in range(p):
        if t > 1:
            n_ar = 2 * layout.layer_split[s] + (1 if s == 0 else 0)
            out[(s, None, "all_reduce", "tp")] = {"count": n_ar, "bytes": n_ar * act}
            if s == 0:
                out[(s, None, "broadcast", "tp")] = {"count": 2, "bytes": header + 8 * rows * tokens}
            if s == p - 1:
                ops = sampling_gather_ops(rows)
                out[(s, None, "all_gather", "tp")] = {"count": len(ops), "bytes": sum(b for _, b in ops)}
        if p > 1:
            if s < p - 1:
                out[(s, None, "send", "pp")] = {"count": 2, "bytes": header + act}
            if s > 0:
                out[(s, None, "recv", "pp")] = {"count": 2, "bytes": header + act}
            if s == p - 1:
                out[(s, 0, "send", "pp")] = {"count": 2, "bytes": header + 8 * rows}
            if s == 0:
                out[(s, 0, "recv", "pp")] = {"count": 2, "bytes": header + 8 * rows}
    return out


@dataclass(frozen=True)
class Links:
    """Which link each group crosses: node of a rank = its GPU index // GPUs per node."""

    tp_inter: tuple[bool, ...]       # per stage (replica 0): the TP group spans nodes
    pp_inter: tuple[bool, ...]       # per stage s: the hop s -> s+1 (last: back to stage 0) crosses nodes
    tp_gbps: tuple[float, ...]
    pp_gbps: tuple[float, ...]


def links(layout: Layout, gpu: GpuSpec, gpus_per_node: int, gpu_map: list[int] | None = None) -> Links:
    """TP groups inside one node use the intra-node link (link_gbps), else the inter-node one
    (internode_gbps); likewise a PP hop whose two ranks sit on different nodes."""
    def node(rank: int) -> int:
        return (gpu_map[rank] if gpu_map else rank) // gpus_per_node

    tp_inter, pp_inter = [], []
    for s in range(layout.pp):
        ranks = [[layout.rank_of(d, s, k) for k in range(layout.tp)] for d in range(layout.dp)]
        tp_inter.append(any(len({node(r) for r in g}) > 1 for g in ranks))
        nxt = (s + 1) % layout.pp
        pp_inter.append(any(node(layout.rank_of(d, s, k)) != node(layout.rank_of(d, nxt, k))
                            for d in range(layout.dp) for k in range(layout.tp)))

    def bw(inter: bool) -> float:
        return gpu.internode_gbps if inter else gpu.link_gbps

    return Links(tuple(tp_inter), tuple(pp_inter), tuple(map(bw, tp_inter)), tuple(map(bw, pp_inter)))


def comm_time_s(shape: ModelShape, layout: Layout, dtype_bytes: int, max_batch: int, lk: Links,
                stage: int, rows: int, tokens: int) -> float:
    """Time floor of one rank's ops for one micro-batch forward at link bandwidth (TP rank 0, the
    busiest): Σ bytes · factor / bw — all_reduce 2(t−1)/t, all_gather t−1, broadcast and send 1;
    a recv is the sender's time. Per-op latency is ignored (a bandwidth floor)."""
    total = 0.0
    for (s, k, op, group), v in expected_comm(shape, layout, dtype_bytes, max_batch, rows, tokens).items():
        if s != stage or k not in (None, 0) or op == "recv":
            continue
        n = layout.tp
        factor = {"all_reduce": ring_factor(n), "all_gather": n - 1, "broadcast": 1.0, "send": 1.0}[op]
        bw = (lk.tp_gbps if group == "tp" else lk.pp_gbps)[stage] * 1e9
        total += v["bytes"] * factor / bw
    return total


# ---------------------------------------------------------------- time floors

def stage_flops(shape: ModelShape, layout: Layout, stage: int, rows: int, tokens: int, context: float) -> float:
    """FLOPs of one TP rank of ``stage`` for ``rows`` rows of ``tokens`` new tokens after
    ``context`` cached ones: 2·M_s·B·T + [last] 2·(V·h/t)·B + 4·L_s·(q_dim/t)·B·(T·c + T(T+1)/2),
    M_s = L_s·(P_layer − 2h)/t the layers' matmul weights; lm_head runs on the last position of
    each row only; attention QKᵀ and AV cost 2·2·q_dim/t per (query, key) pair, causal."""
    t, h = layout.tp, shape.hidden
    layers = layout.layer_split[stage]
    matmul = layers * (shape.layer_params() - 2 * h) / t
    f = 2.0 * matmul * rows * tokens
    if stage == layout.pp - 1:
        f += 2.0 * shape.vocab * h / t * rows
    f += 4.0 * layers * shape.q_dim / t * rows * (tokens * context + tokens * (tokens + 1) / 2)
    return f


def stage_bytes_read(shape: ModelShape, layout: Layout, stage: int, dtype_bytes: int,
                     rows: int, tokens: int, context: float) -> float:
    """HBM bytes one TP rank of ``stage`` must touch: its weights (the embedding table only for
    the B·T rows looked up) + the KV cache of the batch's context and new tokens:
    W_s − [first]·(V·h/t)·d + [first]·B·T·(h/t)·d + B·(c + T)·kv_s."""
    w = rank_params(shape, layout, stage) * dtype_bytes
    if stage == 0:
        if not (shape.tie_embeddings and layout.pp == 1):   # a tied table is read whole by the lm_head
            w -= shape.vocab * shape.hidden // layout.tp * dtype_bytes
        w += rows * tokens * shape.hidden // layout.tp * dtype_bytes
    return w + rows * (context + tokens) * kv_bytes_per_token(shape, layout, stage, dtype_bytes)


def compute_floor_s(gpu: GpuSpec, flops: float, nbytes: float) -> float:
    """Roofline floor: max(bytes / HBM bandwidth, FLOPs / dense peak)."""
    return max(nbytes / (gpu.hbm_gbps * 1e9), flops / (gpu.bf16_tflops * 1e12))


# ---------------------------------------------------------------- workload

@dataclass(frozen=True)
class WorkloadShape:
    """Mean and largest lengths of a workload (clipping ignored: means are the distributions')."""

    input_mean: float
    output_mean: float
    input_max: int | None        # None: unbounded (normal/lognormal without max)
    output_max: int | None
    arrival: str
    rate_rps: float | None
    concurrency: int | None


def _dist_mean(d) -> float:
    """fixed: value; uniform: (min + max)/2; normal and lognormal: mean (lognormal's is arithmetic)."""
    return float(d.value) if d.dist == "fixed" else (d.min + d.max) / 2 if d.dist == "uniform" else float(d.mean)


def _dist_max(d) -> int | None:
    return d.value if d.dist == "fixed" else d.max


def workload_shape(w) -> WorkloadShape:
    """From a spec's ``workload`` section; a trace's lengths are read from the file itself."""
    if w.trace:
        from harness.workload import load_trace  # numpy only, and only for traces
        reqs = load_trace(w.trace)
        if not reqs:
            return WorkloadShape(1.0, 1.0, 1, 1, w.arrival, w.rate_rps, w.concurrency)
        ins, outs = [r.input_len for r in reqs], [r.output_len for r in reqs]
        span = reqs[-1].arrival_s - reqs[0].arrival_s
        rate = (len(reqs) - 1) / span if span > 0 else w.rate_rps
        return WorkloadShape(sum(ins) / len(ins), sum(outs) / len(outs), max(ins), max(outs), w.arrival,
                             rate, w.concurrency)
    return WorkloadShape(_dist_mean(w.input_len), _dist_mean(w.output_len), _dist_max(w.input_len),
                         _dist_max(w.output_len), w.arrival, w.rate_rps if w.arrival != "closed" else None,
                         w.concurrency if w.arrival == "closed" else None)


# ---------------------------------------------------------------- per-stage timing

@dataclass(frozen=True)
class Timing:
    """Floors of one replica's stages; ``latency`` = compute + comm (a micro-batch's own ops are
    serial), ``occupancy`` = max(compute, comm) (another micro-batch may overlap them)."""

    shape: ModelShape
    layout: Layout
    gpu: GpuSpec
    dtype_bytes: int
    max_batch: int
    links: Links

    def compute(self, s: int, rows: int, tokens: int, context: float) -> float:
        return compute_floor_s(self.gpu, stage_flops(self.shape, self.layout, s, rows, tokens, context),
                               stage_bytes_read(self.shape, self.layout, s, self.dtype_bytes, rows, tokens, context))

    def comm(self, s: int, rows: int, tokens: int) -> float:
        return comm_time_s(self.shape, self.layout, self.dtype_bytes, self.max_batch, self.links, s, rows, tokens)

    def latency(self, s: int, rows: int, tokens: int, context: float) -> float:
        return self.compute(s, rows, tokens, context) + self.comm(s, rows, tokens)

    def occupancy(self, s: int, rows: int, tokens: int, context: float) -> float:
        return max(self.compute(s, rows, tokens, context), self.comm(s, rows, tokens))


# ---------------------------------------------------------------- workload bounds

@dataclass(frozen=True)
class Bounds:
    """Bounds for the spec's workload at mean lengths (Lin, Lout); B rows per micro-batch.

    c = Lin + Lout/2 (mean context while decoding); step_s(B) = latency of stage s for B rows × 1
    token; occ_s likewise with occupancy.
    - kv_rows_limit = ⌊capacity_tokens / (m·(Lin + Lout))⌋; decode_rows B = min(max_batch, that)
    - tpot_floor = Σ_s step_s(1): one request alone
    - tpot_at_rows(B) = max(Σ_s step_s(B), m·max_s occ_s(B)): every micro-batch holding B rows
    - ttft_floor = Σ_s prefill latency of one Lin-token prompt; e2e_floor = ttft + (Lout−1)·tpot
    - per request, a replica spends ≥ max(max_s [pre_occ_s(Lin) + Lout·occ_s(B)/B],
      Lout·Σ_s step_s(B)/(m·B)) (the busiest stage; the m micro-batches' round trip);
      rps_bound = dp / that (closed loop: also ≤ concurrency / e2e_floor)
    - slo_rows: the largest B whose tpot_at_rows (and e2e) meets the targets; rps_slo = the
      bound at slo_rows (0 when no B meets them or TTFT cannot).
    The bubble (p−1)/(m+p−1) is reported, not applied: a serving pipeline that keeps m ≥ p
    micro-batches cycling has no fill/drain per batch; the round-trip term above covers m < p.
    """

    input_mean: float
    output_mean: float
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


def workload_bounds(tm: Timing, wl: WorkloadShape, capacity_tokens: int, micro_batches: int,
                    targets=()) -> Bounds:
    lay, m = tm.layout, micro_batches
    lin, lout = max(wl.input_mean, 1.0), max(wl.output_mean, 1.0)
    c = lin + lout / 2
    stages = range(lay.pp)
    kv_rows = int(capacity_tokens // (m * (lin + lout)))
    rows_cap = tm.max_batch
    if wl.concurrency is not None:     # closed loop: at most `concurrency` sequences over dp·m micro-batches
        rows_cap = min(rows_cap, max(1, math.ceil(wl.concurrency / (lay.dp * m))))
    b_max = max(1, min(rows_cap, kv_rows))
    n_in = max(1, round(lin))
    pre_lat = [tm.latency(s, 1, n_in, 0.0) for s in stages]
    pre_occ = [tm.occupancy(s, 1, n_in, 0.0) for s in stages]

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
    if kv_rows < 1 and capacity_tokens > 0:   # 0: the plan already says the weights do not fit
        problems.append(f"KV cache holds {capacity_tokens} tokens per replica: fewer than {m} micro-batches "
                        f"x one {lin + lout:.0f}-token request")

    def meets(b: int) -> bool:
        t = tpot_at(b)
        return t <= lim.get("tpot_s", math.inf) and ttft + (lout - 1) * t <= lim.get("e2e_s", math.inf)

    slo_rows = None
    rps_slo = None
    if targets:
        lo, hi = 0, b_max          # largest b in 1..b_max that meets (tpot_at grows with b)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if meets(mid) else (lo, mid - 1)
        slo_rows = lo or None
        if "tpot_s" in lim and tpot1 > lim["tpot_s"]:
            problems.append(f"TPOT floor {tpot1 * 1e3:.1f} ms > target {lim['tpot_s'] * 1e3:g} ms")
        elif slo_rows is None:
            problems.append(f"no batch meets the TPOT/E2E targets with {m} micro-batches in flight "
                            f"(TPOT at 1 row {tpot_at(1) * 1e3:.1f} ms)")
        if "ttft_s" in lim and ttft > lim["ttft_s"]:
            problems.append(f"TTFT floor {ttft * 1e3:.1f} ms > target {lim['ttft_s'] * 1e3:g} ms")
        ok = slo_rows is not None and not (("ttft_s" in lim) and ttft > lim["ttft_s"])
        rps_slo = rps(slo_rows) if ok else 0.0
        if "throughput_rps" in lim and rps_slo < lim["throughput_rps"] and kv_rows >= 1:
            problems.append(f"capacity bound {rps_slo:.2f} RPS < target {lim['throughput_rps']:g} RPS")
    return Bounds(lin, lout, c, m, bubble_ratio(lay.pp, m), kv_rows, b_max, tuple(step(b_max)),
                  tuple(x / n_in for x in pre_lat), tpot1, tpot_at(b_max), ttft, e2e, rps(b_max), slo_rows,
                  rps_slo, wl.rate_rps, {k: v for k, v in lim.items()}, tuple(problems))


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
    kv_budget_bytes: int        # kv_cache_fraction · (memory − weights − workspace), ≥ 0
    kv_token_capacity: int      # kv_budget // kv_bytes_per_token
    total_bytes: int
    memory_bytes: int
    headroom_bytes: int
    fits: bool                  # weights + workspace fit and the KV budget holds one slot (seq_len tokens)


@dataclass(frozen=True)
class StagePlan:
    stage: int
    layers: int
    first_layer: int
    last_layer: int
    holds: tuple[str, ...]
    ranks: tuple[int, ...]              # replica 0
    params_per_rank: int
    weight_bytes_per_rank: int
    weight_bytes: int                   # the stage's TP ranks together (one replica)
    kv_bytes_per_token_per_rank: int
    kv_token_capacity: int              # tokens the stage can cache (each rank holds its share of every token)
    tp_allreduces_per_forward: int      # 2·L_s + [s = 0], 0 when tp = 1
    tp_allreduce_bytes_per_token: int   # payload bytes per token per forward: (2·L_s + [s = 0])·h·d
    tp_link: str
    tp_time_per_token_s: float          # payload · 2(t−1)/t / link bandwidth
    pp_link: str | None                 # hop to the next stage
    pp_time_per_token_s: float | None   # h·d / link bandwidth


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
    model_weight_bytes: int              # one replica, TP-replicated norms counted on each rank
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


def _link_name(inter: bool, gpu: GpuSpec) -> str:
    return f"inter-node {gpu.internode_gbps:g} GB/s" if inter else f"intra-node {gpu.link_gbps:g} GB/s"


def seq_len(spec) -> int:
    """KV slot length, as the runtime allocates it: run.max_seq_len, else the model's context."""
    return spec.run.max_seq_len or spec.shape.max_context


def forward_width(spec, wl: WorkloadShape) -> int:
    """Widest padded row of a forward: the prefill chunk, else the longest prompt (bounded), else the slot."""
    if spec.run.prefill_chunk:
        return min(spec.run.prefill_chunk, seq_len(spec))
    return min(wl.input_max or seq_len(spec), seq_len(spec))


def plan(spec, layout: Layout | None = None) -> Plan:
    """The whole plan of a validated spec; ``layout`` replaces the spec's (as ``--search`` does;
    the spec's gpu_map then no longer applies)."""
    lay = layout or spec.layout
    gpu_map = spec.parallel.gpu_map if layout is None else None
    shape, gpu, d, r = spec.shape, spec.gpu, spec.dtype_bytes, spec.run
    per_node = spec.cluster.gpus_per_node
    wl = workload_shape(spec.workload)
    width = forward_width(spec, wl)
    slot = seq_len(spec)
    mem = gpu.memory_bytes
    ranks, problems = [], []
    for k in range(lay.world_size):
        pl = lay.place(k)
        last = pl.stage == lay.pp - 1
        params = rank_params(shape, lay, pl.stage)
        w = params * d
        kvt = kv_bytes_per_token(shape, lay, pl.stage, d)
        ws = workspace_bytes(shape, lay.tp, last, d, r.max_batch, width)
        free = mem - w - ws
        budget = int(r.kv_cache_fraction * free) if free > 0 else 0
        cap = budget // kvt
        total = w + ws + budget
        fits = free > 0 and cap >= slot
        ranks.append(RankPlan(k, pl.dp, pl.stage, pl.tp, (gpu_map[k] if gpu_map else k) // per_node,
                              lay.layer_split[pl.stage], params, w, kvt, ws, budget, cap, total, mem,
                              mem - total, fits))
        if not fits and pl.dp == 0 and pl.tp == 0:
            why = (f"weights {w / 1e9:.1f} GB + workspace {ws / 1e9:.1f} GB exceed {mem / 1e9:.1f} GB"
                   if free <= 0 else f"KV budget holds {cap} tokens < one {slot}-token slot")
            problems.append(f"stage {pl.stage} does not fit: {why}")
    lk = links(lay, gpu, per_node, gpu_map)
    stages = []
    ar_layer = tp_allreduce_bytes_per_layer_per_token(shape, d) if lay.tp > 1 else 0
    pp_tok = pp_bytes_per_token_per_boundary(shape, d)
    for s in range(lay.pp):
        mine = [x for x in ranks if x.stage == s and x.dp == 0]
        lr = lay.layers_of_stage(s)
        n_ar = (2 * lay.layer_split[s] + (s == 0)) if lay.tp > 1 else 0
        ar_tok = n_ar * shape.hidden * d
        stages.append(StagePlan(
            s, len(lr), lr.start, lr.stop - 1, stage_holds(lay, s), tuple(x.rank for x in mine),
            mine[0].params, mine[0].weight_bytes, sum(x.weight_bytes for x in mine), mine[0].kv_bytes_per_token,
            min(x.kv_token_capacity for x in mine), n_ar, ar_tok,
            _link_name(lk.tp_inter[s], gpu) if lay.tp > 1 else "none",
            ar_tok * ring_factor(lay.tp) / (lk.tp_gbps[s] * 1e9),
            _link_name(lk.pp_inter[s], gpu) if s < lay.pp - 1 else None,
            pp_tok / (lk.pp_gbps[s] * 1e9) if s < lay.pp - 1 else None))
    capacity = min(st.kv_token_capacity for st in stages)
    tm = Timing(shape, lay, gpu, d, r.max_batch, lk)
    m = spec.run.micro_batches or lay.pp          # spec.micro_batches, for this layout
    bounds = workload_bounds(tm, wl, capacity, m, spec.slo_targets)
    weights = [x.weight_bytes for x in ranks]
    comm = CommPlan(ar_layer, 2 if lay.tp > 1 else 0, ring_factor(lay.tp), pp_tok if lay.pp > 1 else 0,
                    lay.pp - 1, 8 * header_numel(r.max_batch))
    return Plan(
        name=spec.name, model={"name": shape.name, "hidden": shape.hidden, "layers": shape.num_layers,
                               "heads": shape.num_heads, "kv_heads": shape.num_kv_heads, "vocab": shape.vocab},
        dtype=spec.model.dtype, dtype_bytes=d,
        gpu={"name": gpu.name, "memory_bytes": mem, "hbm_gbps": gpu.hbm_gbps, "bf16_tflops": gpu.bf16_tflops,
             "link_gbps": gpu.link_gbps, "internode_gbps": gpu.internode_gbps},
        cluster={"nodes": spec.cluster.nodes, "gpus_per_node": per_node},
        layout={"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
        run={"max_batch": r.max_batch, "micro_batches": m, "kv_cache_fraction": r.kv_cache_fraction,
             "seq_len": slot, "forward_width": width},
        params_total=shape.total_params(), model_weight_bytes=sum(st.weight_bytes for st in stages),
        ranks=tuple(ranks), stages=tuple(stages), weight_epsilon=epsilon(weights),
        total_epsilon=epsilon([x.weight_bytes + x.workspace_bytes + x.kv_budget_bytes for x in ranks]),
        comm=comm, bounds=bounds, fits=all(x.fits for x in ranks), problems=tuple(problems) + bounds.problems)
