"""Planner, communication: the ops each rank issues, their bytes, the links they cross and
their bandwidth time floor.

Pure arithmetic, no torch. Units and symbols as in ``harness.plan.planner``; formulas in
docs/formulas.md."""

from __future__ import annotations

from dataclasses import dataclass

from harness.spec.catalog import GpuSpec, ModelShape
from harness.spec.layout import Layout

HEADER_EXTRA = 4  # int64 step header: 4 fields + 3 per row slot (see header_numel)
SAMPLE_PAIR_BYTES = 16  # greedy sampling gathers (local max, global id) per row as 2 float64


def tp_allreduce_bytes_per_layer_per_token(shape: ModelShape, dtype_bytes: int) -> int:
    """2 all-reduces per decoder layer (after o_proj, after down_proj) of h elements per token:
    2·h·d."""
    return 2 * shape.hidden * dtype_bytes


def pp_bytes_per_token_per_boundary(shape: ModelShape, dtype_bytes: int) -> int:
    """The hidden state crossing one stage boundary per token: h·d."""
    return shape.hidden * dtype_bytes


@dataclass(frozen=True)
class Collective:
    """One communication op with its size and bus factor kept together, as nccl-tests keeps each
    collective (its ``testColl`` table). For a local tensor of B bytes in a group of n ranks:

    - size S: B, or n·B for an op over the gathered buffer (all_gather's output, reduce_scatter's
      input); algbw = S / t;
    - bus factor: busbw = algbw · factor, the bytes each rank's link carries per byte of S (ring
      algorithms), so busbw is comparable with the link's peak whatever the op: all_reduce
      2(n−1)/n, all_gather and reduce_scatter (n−1)/n, broadcast, send and recv 1.

    The link-time floor of one op is therefore S · factor / link bandwidth (``link_bytes``)."""

    gathered: bool
    # ring phases each byte makes around the group: 2 for all_reduce (a reduce-scatter, then an
    # all-gather), 1 for all_gather and reduce_scatter; 0: a point-to-point hop (factor 1)
    ring_phases: int

    def size(self, nbytes: int, n: int) -> int:
        return nbytes * n if self.gathered else nbytes

    def bus_factor(self, n: int) -> float:
        if not self.ring_phases:
            return 1.0
        return self.ring_phases * (n - 1) / n if n > 1 else 0.0


COLLECTIVES = {
    "all_reduce": Collective(gathered=False, ring_phases=2),
    "all_gather": Collective(gathered=True, ring_phases=1),
    "reduce_scatter": Collective(gathered=True, ring_phases=1),
    "broadcast": Collective(gathered=False, ring_phases=0),
    "send": Collective(gathered=False, ring_phases=0),
    "recv": Collective(gathered=False, ring_phases=0),
}
_POINT = COLLECTIVES["send"]  # an op not in the table moves its bytes once


def op_size(op: str, nbytes: int, n: int) -> int:
    """nccl-tests' size S of one ``op`` of ``nbytes`` local bytes in a group of ``n``."""
    return COLLECTIVES.get(op, _POINT).size(nbytes, n)


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' bus factor of ``op`` in a group of ``n`` (busbw = algbw · factor)."""
    return COLLECTIVES.get(op, _POINT).bus_factor(n)


def link_bytes(op: str, nbytes: int, n: int) -> float:
    """Bytes one rank's link carries for one ``op`` of ``nbytes`` local bytes: S · bus factor
    (all_reduce 2(n−1)/n · B, all_gather (n−1) · B, broadcast and send B)."""
    return op_size(op, nbytes, n) * bus_factor(op, n)


def ring_factor(n: int) -> float:
    """All-reduce bus factor 2(n−1)/n (the plan's ``tp_ring_factor``): ``bus_factor``'s entry."""
    return bus_factor("all_reduce", n)


def header_numel(max_batch: int) -> int:
    """int64 elements of a step header: 4 + 3·max_batch."""
    return HEADER_EXTRA + 3 * max_batch


def sampling_gather_ops(rows: int) -> list[tuple[str, int]]:
    """The last stage's greedy sampling over vocab-parallel logits: ONE all_gather over TP of a
    [rows, 2] float64 tensor (each rank's per-row max and its global vocab id; ids < 2^53 are exact
    in float64): [(dtype, bytes)] = [("float64", 16·rows)]. One op, not two: half the latency."""
    return [("float64", rows * SAMPLE_PAIR_BYTES)]


def expected_comm(
    shape: ModelShape,
    layout: Layout,
    dtype_bytes: int,
    max_batch: int,
    rows: int,
    tokens: int,
    total_tokens: int | None = None,
) -> dict[tuple[int, int | None, str, str], dict[str, int]]:
    """Ops ONE rank issues for one micro-batch forward of ``rows`` rows of ``tokens`` tokens each,
    or of ``total_tokens`` packed tokens over ``rows`` rows (a batch of unequal rows).

    Key (stage, tp_rank, op, group); tp_rank None means every TP rank of the stage, 0 only TP
    rank 0. Value {count, bytes}: ops and the sum of their local tensor bytes. A group of one
    rank issues nothing. With B = rows, B·T = the tokens (``total_tokens`` when given),
    H = 8·(4 + 3·max_batch) header bytes:
      TP (t > 1): all_reduce (2·L_s + [s = 0]) × B·T·h·d  (the +1: vocab-parallel embedding);
        stage 0: broadcast 2 ops, H + 8·B·T (header, token ids); last stage: all_gather 1 op, 16·B
        (per row: local max and global id as 2 float64).
      PP (p > 1): stage s < p−1 sends 2 ops, H + B·T·h·d, to the same TP rank of s+1, which
        records 2 recvs of the same bytes; the last stage's TP rank 0 sends H + 8·B (header,
        sampled tokens) to stage 0's TP rank 0, which records the 2 recvs.
    """
    out: dict[tuple[int, int | None, str, str], dict[str, int]] = {}
    t, p = layout.tp, layout.pp
    n_tok = rows * tokens if total_tokens is None else total_tokens
    act = n_tok * shape.hidden * dtype_bytes
    header = 8 * header_numel(max_batch)
    for s in range(p):
        if t > 1:
            n_ar = 2 * layout.layer_split[s] + (1 if s == 0 else 0)
            out[(s, None, "all_reduce", "tp")] = {"count": n_ar, "bytes": n_ar * act}
            if s == 0:
                out[(s, None, "broadcast", "tp")] = {"count": 2, "bytes": header + 8 * n_tok}
            if s == p - 1:
                ops = sampling_gather_ops(rows)
                out[(s, None, "all_gather", "tp")] = {
                    "count": len(ops),
                    "bytes": sum(b for _, b in ops),
                }
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

    tp_inter: tuple[bool, ...]  # per stage (replica 0): the TP group spans nodes
    pp_inter: tuple[
        bool, ...
    ]  # per stage s: the hop s -> s+1 (last: back to stage 0) crosses nodes
    tp_gbps: tuple[float, ...]
    pp_gbps: tuple[float, ...]


def links(layout: Layout, gpu: GpuSpec, gpus_per_node: int) -> Links:
    """TP groups inside one node use the intra-node link (link_gbps), else the inter-node one
    (internode_gbps); likewise a PP hop whose two ranks sit on different nodes. Rank r runs on node
    r // gpus_per_node (torchrun gives each node a contiguous block of ranks; ``parallel.gpu_map``
    only picks the device within the node)."""

    def node(rank: int) -> int:
        return rank // gpus_per_node

    tp_inter, pp_inter = [], []
    for s in range(layout.pp):
        ranks = [[layout.rank_of(d, s, k) for k in range(layout.tp)] for d in range(layout.dp)]
        tp_inter.append(any(len({node(r) for r in g}) > 1 for g in ranks))
        nxt = (s + 1) % layout.pp
        pp_inter.append(
            any(
                node(layout.rank_of(d, s, k)) != node(layout.rank_of(d, nxt, k))
                for d in range(layout.dp)
                for k in range(layout.tp)
            )
        )

    def bw(inter: bool) -> float:
        return gpu.internode_gbps if inter else gpu.link_gbps

    return Links(
        tuple(tp_inter), tuple(pp_inter), tuple(map(bw, tp_inter)), tuple(map(bw, pp_inter))
    )


def comm_time_s(
    shape: ModelShape,
    layout: Layout,
    dtype_bytes: int,
    max_batch: int,
    lk: Links,
    stage: int,
    rows: int,
    tokens: int,
) -> float:
    """Time floor of one rank's ops for one micro-batch forward at link bandwidth (TP rank 0, the
    busiest): Σ ``link_bytes`` / bw — all_reduce 2(t−1)/t · B, all_gather (t−1) · B, broadcast and
    send B; a recv is the sender's time. Per-op latency is ignored (a bandwidth floor)."""
    total = 0.0
    for (s, k, op, group), v in expected_comm(
        shape, layout, dtype_bytes, max_batch, rows, tokens
    ).items():
        if s != stage or k not in (None, 0) or op == "recv":
            continue
        bw = (lk.tp_gbps if group == "tp" else lk.pp_gbps)[stage] * 1e9
        total += link_bytes(op, v["bytes"], layout.tp) / bw
    return total
