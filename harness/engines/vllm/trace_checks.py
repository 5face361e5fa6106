"""vLLM's traced communication against the planner's formulas (pure), as the reference engine's
``comm stage S GROUP OP`` checks, summed over every non-empty step of the profiled window and
every rank of the stage. T = a step's tokens as computed (the TP all-reduce's first dimension:
scheduled tokens plus any padding), h = hidden, d = dtype bytes.

Where vLLM does what the planner assumes, its formula is the expectation, exactly:
- TP all-reduce: ``planner.expected_comm`` — (2·L_s + [s = 0]) ops of T·h·d per rank.
- PP hidden states: the planner's h·d per token per boundary, T·h·d per step, which vLLM splits
  over the stage's TP ranks (each sends T·h·d/tp: ``send_tensor_dict(all_gather_group=tp)``).
(vLLM's shm communicator on AVX-512 CPUs sends whole tensors in one list instead: T·h·d per rank,
no all-gather, the metadata one uint8 tensor at the list's end.)
Where vLLM does more, the check names the difference and its formula:
- the residual stream (``pp_residual``): another T·h·d/tp per rank: per token per boundary vLLM
  moves 2·h·d, twice the planner's h·d;
- the receiver's TP all-gather (``tp_after_recv``): one per received tensor, T·h·d/tp local bytes;
- the last stage's logits all-gather (``tp all_gather``): rows × vocab/tp × d per rank and step
  (vocab padded to 64; the planner's reference engine gathers 16 B per row instead);
- the pickled metadata (``pp_meta``): 2 sends (int64 size, uint8 payload) per hop and rank, its
  bytes depend on pickle (counted, not predicted).
Any group/op the trace has and no rule explains fails its check.
"""

from __future__ import annotations

from collections import defaultdict

from harness.measure.vllm_tables import computed_tokens
from harness.plan import planner


def step_tokens(spec, ranks, comm: list[dict]) -> dict[tuple[int, int], int]:
    """(rank, step) → tokens computed: the first TP all-reduce's elements / hidden, else the
    step range's scheduled tokens."""
    out = {(r.worker.rank, k): s.tokens for r in ranks for k, s in enumerate(r.steps)}
    out.update(computed_tokens(comm, spec.shape.hidden))
    return out


def shm_p2p(ranks) -> bool:
    """PP through vLLM's shm communicator: whole tensors in one list, no all-gather."""
    return any(
        o.entry.backend == "shm" and o.entry.op in ("send", "recv") for r in ranks for o in r.ops
    )


def _expected(spec, ranks, tokens) -> dict[tuple[int, str, str], list]:
    lay, sh, d = spec.layout, spec.shape, spec.dtype_bytes
    shm = shm_p2p(ranks)
    split = lay.tp if not shm else 1  # torch.distributed: 1/tp slices, then an all-gather
    meta = 1 if shm else 2
    act = planner.pp_bytes_per_token_per_boundary(sh, d)
    exp: dict[tuple[int, str, str], list] = defaultdict(lambda: [0, 0])

    def add(key, count, nbytes):
        exp[key][0] += count
        exp[key][1] = None if nbytes is None or exp[key][1] is None else exp[key][1] + nbytes

    for r in ranks:
        s = r.worker.pp
        for k, st in enumerate(r.steps):
            t = tokens[(r.worker.rank, k)]
            if lay.tp > 1:
                e = planner.expected_comm(
                    sh,
                    lay,
                    d,
                    spec.run.max_batch,
                    st.prefill_rows + st.decode_rows,
                    1,
                    total_tokens=t,
                )
                v = e[(s, None, "all_reduce", "tp")]
                add((s, "tp", "all_reduce"), v["count"], v["bytes"])
            if s == lay.pp - 1 and lay.tp > 1:
                # the logits of every sampled row, vocab-parallel, all-gathered over TP
                vocab = -(-sh.vocab // 64) * 64  # vLLM pads the vocabulary to 64
                rows = st.prefill_rows + st.decode_rows
                add((s, "tp", "all_gather"), 1, rows * vocab // lay.tp * d)
            slice_ = t * act // split
            if s < lay.pp - 1:
                add((s, "pp", "send"), 1, slice_)
                add((s, "pp_residual", "send"), 1, slice_)
                add((s, "pp_meta", "send"), meta, None)
            if s > 0:
                add((s, "pp", "recv"), 1, slice_)
                add((s, "pp_residual", "recv"), 1, slice_)
                add((s, "pp_meta", "recv"), meta, None)
                if split > 1:
                    add((s, "tp_after_recv", "all_gather"), 2, 2 * slice_)
    return exp


DETAIL = {
    "tp": "planner formula (2 all-reduces per layer, +1 for the embedding on stage 0) of T·h·d "
    "each vs traced ops",
    "pp": "planner's h·d per token per boundary; vLLM sends it as 1/tp slices, one per TP rank "
    "(through shm: whole, from every TP rank)",
    "pp_residual": "not in the planner: vLLM also sends the residual stream, as many bytes as the "
    "hidden states (twice the planner's traffic per boundary)",
    "tp_after_recv": "not in the planner: the receiver all-gathers each 1/tp slice over TP "
    "(2 per step: hidden states and residual)",
    "tp all_gather": "not the planner's (its reference engine gathers 16 B per row): vLLM "
    "all-gathers the vocab-parallel logits of each sampled row, rows × vocab/tp × d per rank",
    "pp_meta": "not in the planner: vLLM's pickled metadata per hop (int64 size + uint8 "
    "payload); bytes depend on pickle, only the count is predicted",
}


def cross_checks(spec, ranks, comm: list[dict]) -> list[dict]:
    tokens = step_tokens(spec, ranks, comm)
    exp = _expected(spec, ranks, tokens)
    stage_of = {r.worker.rank: r.worker.pp for r in ranks}
    got: dict[tuple[int, str, str], list] = defaultdict(lambda: [0, 0])
    for c in comm:
        if c["step"] is None:
            continue
        key = (stage_of[c["rank"]], c["group"], c["op"])
        got[key][0] += 1
        got[key][1] += c["bytes"]
    checks = []
    for key in sorted(set(exp) | set(got)):
        e, m = exp.get(key), got.get(key, [0, 0])
        stage, group, op = key
        if e is None:
            ok, detail = False, "no rule of the planner or of vLLM's known extras explains it"
            expected = None
        else:
            ok = e[0] == m[0] and (e[1] is None or e[1] == m[1])
            detail = DETAIL.get(f"{group} {op}", DETAIL.get(group, ""))
            expected = {"count": e[0], "bytes": e[1]}
        checks.append(
            {
                "name": f"vllm comm stage {stage} {group} {op}",
                "expected": expected,
                "measured": {"count": m[0], "bytes": m[1]},
                "ok": ok,
                "detail": detail + " (vLLM trace, all window steps, all ranks of the stage)",
            }
        )
    checks.append(_steps_agree(ranks))
    checks.append(_padding(ranks, tokens))
    return checks


def _steps_agree(ranks) -> dict:
    sig = {r.worker.rank: [s.counts for s in r.steps] for r in ranks}
    first = next(iter(sig.values()), [])
    bad = sorted(k for k, v in sig.items() if v != first)
    return {
        "name": "vllm trace steps agree across ranks",
        "expected": len(first),
        "measured": {str(k): len(v) for k, v in sig.items()},
        "ok": not bad,
        "detail": "every worker ran the same non-empty steps (requests and tokens) in the same "
        "order" + (f"; ranks {bad} differ" if bad else ""),
    }


def _padding(ranks, tokens) -> dict:
    sched = sum(s.tokens for r in ranks for s in r.steps)
    comp = sum(tokens[(r.worker.rank, k)] for r in ranks for k in range(len(r.steps)))
    return {
        "name": "vllm trace tokens computed vs scheduled",
        "expected": sched,
        "measured": comp,
        "ok": comp >= sched,
        "detail": "Σ over ranks and steps of the all-reduce's first dimension vs the step ranges' "
        f"scheduled tokens; the difference ({comp - sched}) is padding",
    }
