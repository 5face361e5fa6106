"""Every vLLM worker's parsed trace → the reference engine's tables: ``comm`` and ``stages``
(pure; the schemas of ``harness.results.schema``).

comm rows (one per tensor an op moved), ``group`` names what the traffic is for:
- ``tp``: TP collectives of the layers (all_reduce: the embedding on stage 0, then 2 per layer);
  ``all_gather``/``gather`` of the last stage's logits;
- ``pp``: the hidden states sent to the next stage (each TP rank sends 1/tp of them: vLLM's
  ``send_tensor_dict(all_gather_group=tp)``);
- ``pp_residual``: the residual stream vLLM sends beside them (Llama's second intermediate tensor;
  no term of the planner's formula);
- ``pp_meta``: the pickled metadata of each hop (int64 size, uint8 payload);
- ``tp_after_recv``: the receiver's TP all-gather that rebuilds each 1/tp slice.
An op that moves a list of tensors (shm) gives one row per tensor, its time on the first row
only (so sums over rows count it once). Rows of one step keep the step's order: on a rank, the
first float tensor a step sends (or receives) is the hidden states, later float ones the
residual.

stages rows: per rank per non-empty step, t_recv_start/t_recv_end = the step's receives
(and their all-gathers; the step's start on stage 0), t_compute_end = the step range's end or
the first send, whichever is first, t_send_end = the last send's end. Seconds from the
profiled window's first step on any rank (the workers share the host's clock).
``harness.measure.stages`` derives busy, waiting, bubble ratio and imbalance from them.
"""

from __future__ import annotations

from collections import defaultdict

from harness.measure.vllm_trace import Op, RankTrace

META_DTYPES = {"int64", "uint8", "int32"}


def t0_us(ranks: list[RankTrace]) -> float | None:
    starts = [s.start_us for r in ranks for s in r.steps]
    return min(starts) if starts else None


def _roles(r: RankTrace, pp: int) -> list[tuple[Op, int, str]]:
    """(op, tensor index, group) for every tensor of every op of the rank."""
    out: list[tuple[Op, int, str]] = []
    floats_seen: dict[tuple[int | None, str], int] = defaultdict(int)
    first_ar: dict[int | None, float] = {}
    recv_steps = set()
    for o in r.ops:
        if o.entry.op == "all_reduce":
            first_ar.setdefault(o.step, o.start_us)
        if o.entry.op == "recv":
            recv_steps.add(o.step)
    for o in r.ops:
        op = o.entry.op
        for i, t in enumerate(o.tensors or [None]):
            if op in ("send", "recv"):
                if t is not None and t.dtype in META_DTYPES:
                    group = "pp_meta"
                else:
                    k = floats_seen[(o.step, op)]
                    floats_seen[(o.step, op)] += 1
                    group = "pp" if k == 0 else "pp_residual"
            elif (
                op == "all_gather"
                and r.worker.pp > 0
                and o.step in recv_steps
                and o.start_us < first_ar.get(o.step, float("inf"))
            ):
                group = "tp_after_recv"
            else:
                group = "tp"
            out.append((o, i, group))
    return out


def _peer(w, op: str, tp: int, pp: int) -> int | None:
    if op == "send" and w.pp + 1 < pp:
        return (w.dp * pp + w.pp + 1) * tp + w.tp
    if op == "recv" and w.pp > 0:
        return (w.dp * pp + w.pp - 1) * tp + w.tp
    return None


def _shm_recv_tensors(ranks: list[RankTrace], tp: int, pp: int) -> None:
    """A shm receive has no input tensors: give it the matching send's (same step on the peer)."""
    by_rank = {r.worker.rank: r for r in ranks}
    for r in ranks:
        for o in r.ops:
            if o.entry.op != "recv" or o.tensors or not o.entry.tensor_list:
                continue
            peer = by_rank.get(_peer(r.worker, "recv", tp, pp))
            if peer is None:
                continue
            sends = [s for s in peer.ops if s.entry.op == "send" and s.step == o.step]
            if sends:
                o.tensors = list(sends[0].tensors)


def comm_rows(ranks: list[RankTrace], tp: int, pp: int, timed: bool = True) -> list[dict]:
    """The ``comm`` table (without the derived bandwidth columns). ``timed`` False: the
    ``counts`` level, no times."""
    _shm_recv_tensors(ranks, tp, pp)
    base = t0_us(ranks) or 0.0
    rows = []
    for r in sorted(ranks, key=lambda x: x.worker.rank):
        for o, i, group in _roles(r, pp):
            t = o.tensors[i] if o.tensors else None
            size = tp if group.startswith("tp") else pp
            rows.append(
                {
                    "rank": r.worker.rank,
                    "step": o.step,
                    "phase": r.steps[o.step].phase if o.step is not None else None,
                    "op": o.entry.op,
                    "group": group,
                    "group_size": size,
                    "peer": _peer(r.worker, o.entry.op, tp, pp),
                    "dtype": t.dtype if t else None,
                    "numel": t.numel if t else 0,
                    "bytes": (t.bytes or 0) if t else 0,
                    # a tensor list moves in one op: its time on its first row only
                    "t_start_s": (o.start_us - base) / 1e6 if timed and i == 0 else None,
                    "t_end_s": (o.end_us - base) / 1e6 if timed and i == 0 else None,
                    "name": o.name,
                    "paired": o.paired,
                }
            )
    return rows


def stage_rows(ranks: list[RankTrace], comm: list[dict]) -> list[dict]:
    """The ``stages`` table from the step ranges and the timed comm rows."""
    base = t0_us(ranks) or 0.0
    by = defaultdict(list)
    for c in comm:
        if c["step"] is not None and c["t_start_s"] is not None:
            by[(c["rank"], c["step"])].append(c)
    out = []
    for r in sorted(ranks, key=lambda x: x.worker.rank):
        w = r.worker
        for k, s in enumerate(r.steps):
            start, end = (s.start_us - base) / 1e6, (s.end_us - base) / 1e6
            ops = by.get((w.rank, k), [])
            recv = [c for c in ops if c["op"] == "recv" or c["group"] == "tp_after_recv"]
            send = [c for c in ops if c["op"] == "send"]
            r0 = min([c["t_start_s"] for c in recv] + [start]) if recv else start
            r1 = max(c["t_end_s"] for c in recv) if recv else r0
            c_end = max(r1, min([end] + [c["t_start_s"] for c in send if c["t_start_s"] >= r1]))
            s_end = max([c_end] + [c["t_end_s"] for c in send])
            out.append(
                {
                    "rank": w.rank,
                    "dp": w.dp,
                    "stage": w.pp,
                    "tp": w.tp,
                    "step": k,
                    "t_recv_start_s": r0,
                    "t_recv_end_s": r1,
                    "t_compute_end_s": c_end,
                    "t_send_end_s": s_end,
                }
            )
    return out


def computed_tokens(comm: list[dict], hidden: int) -> dict[tuple[int, int], int]:
    """(rank, step) → the tokens the step computed: the first dimension of its first TP all-reduce
    (the scheduled tokens plus any padding), read back as the row's elements / hidden; a step
    without one (tp = 1) is absent."""
    out: dict[tuple[int, int], int] = {}
    for c in comm:
        key = (c["rank"], c["step"])
        if c["op"] == "all_reduce" and c["group"] == "tp" and c["step"] is not None:
            if key not in out and c["numel"] and c["numel"] % hidden == 0:
                out[key] = c["numel"] // hidden
    return out
