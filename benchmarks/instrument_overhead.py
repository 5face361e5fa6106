"""Instrumentation overhead and coverage, in one torchrun world.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 8 benchmarks/instrument_overhead.py \
        configs/tiny-tp2-pp4-cpu.yaml --rounds 10 --tokens 32 --out /tmp/overhead.json

The coordinator generates the same batch (4 prompts, ``--tokens`` greedy tokens each) in
``--rounds`` rounds per level, the levels alternating (off, counts, timing, off, ...), so that a
noisy machine hits every level alike. Overhead = median over cycles of (round time at a level /
the same cycle's ``off`` round) − 1; and, immune to noise, a bound from the recorder's own
measured cost per op × the busiest rank's ops per round / the ``off`` round time.

Coverage: every torch.distributed op function is wrapped with a counter (which sees every
hand-written collective, the only kind the runtime issues); in each round the number of calls
must equal the number of rows the trace gained. A mismatch means an op bypassed
harness.engines.reference.comm. The shared-memory TP all-reduce (``run.cpu_all_reduce: shm``,
attached as a run attaches it) is counted the same way: each exchange is one call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.distributed as dist

from harness.engines.reference import dist as hdist
from harness.engines.reference.generate import generate
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import SeededWeights
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.shm_allreduce import ShmAllReduce
from harness.engines.reference.shm_allreduce import attach as attach_all_reduce
from harness.spec.spec import load_spec

OPS = (
    "all_reduce",
    "all_gather",
    "broadcast",
    "send",
    "recv",
    "isend",
    "irecv",
    "reduce_scatter",
    "all_to_all",
    "gather",
    "scatter",
    "reduce",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "batch_isend_irecv",
    "all_gather_object",
    "broadcast_object_list",
)
LEVELS = ("off", "counts", "timing")


def count_dist_calls() -> dict[str, int]:
    counts = {op: 0 for op in OPS}
    for op in OPS:
        fn = getattr(dist, op, None)
        if fn is None:
            continue

        def wrapped(*a, __fn=fn, __op=op, **kw):
            counts[__op] += 1
            return __fn(*a, **kw)

        setattr(dist, op, wrapped)
    counts["shm_all_reduce"] = 0
    exchange = ShmAllReduce.__call__

    def shm_wrapped(self, t):
        counts["shm_all_reduce"] += 1
        return exchange(self, t)

    ShmAllReduce.__call__ = shm_wrapped
    return counts


def recorder_cost_s(level: str, ctx, n: int = 20000) -> float:
    """Seconds the recorder adds to one op at ``level`` (begin + end), measured on its own."""
    from harness.engines.reference.comm import CommRecorder

    rec = CommRecorder(ctx.rank, level, cuda=ctx.device.type == "cuda")
    t = torch.zeros(16, device=ctx.device)
    t0 = time.perf_counter()
    for _ in range(n):
        rec.end(rec.begin(), "all_reduce", "tp", 2, -1, t)
    rec.flush()
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument(
        "--inject-bypass",
        action="store_true",
        help="negative control: issue one all_reduce behind harness.engines.reference.comm's back "
        "in each round",
    )
    args = ap.parse_args()
    spec = load_spec(args.config, args.overrides)
    calls = count_dist_calls()
    ctx = hdist.init(spec.layout, "auto", None, spec.run.comm_timeout_s, "off")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[spec.model.dtype]
    model = build_stage(
        spec.shape,
        spec.layout,
        ctx.place,
        ctx.comm,
        dtype=dtype,
        device=ctx.device,
        weights=SeededWeights(spec.run.seed),
    )
    prompts = [[(7 * i + j) % spec.shape.vocab for j in range(8 + 4 * i)] for i in range(4)]
    model.allocate_kv(len(prompts), max(map(len, prompts)) + args.tokens + 1)
    stage = PipelineStage(ctx, model, max_batch=len(prompts), max_tokens=len(prompts) * 32)
    transport, _ = attach_all_reduce(
        ctx.comm,
        ctx.backend,
        spec.run.cpu_all_reduce,
        len(prompts) * 32 * spec.shape.hidden * spec.dtype_bytes,
        spec.run.comm_timeout_s,
    )
    rec = ctx.comm.rec
    times: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    uncovered = []
    schedule = [
        LEVELS[i % 3] for i in range(3 * args.rounds + 1)
    ]  # first round: warm-up, not timed
    for i, level in enumerate(schedule):
        rec.level = level
        before_rows = len(rec.rows)
        if ctx.env.world_size > 1:
            dist.barrier()
        calls_after_barrier = sum(calls.values())
        t0 = time.perf_counter()
        if args.inject_bypass and ctx.env.world_size > 1:
            dist.all_reduce(torch.zeros(1, device=ctx.device))
        if stage.is_coordinator:
            generate(ctx, stage, prompts, args.tokens)
        else:
            stage.serve_forever()
        elapsed = time.perf_counter() - t0
        if level != "off":
            n_calls = sum(calls.values()) - calls_after_barrier
            n_rows = len(rec.rows) - before_rows
            if n_calls != n_rows:
                uncovered.append(
                    {"round": i, "level": level, "dist_calls": n_calls, "trace_rows": n_rows}
                )
        if i > 0:
            times[level].append(elapsed)
    # counts+timing rounds traced
    ops_per_round = (len(rec.rows) / (2 * args.rounds)) if rec.rows else 0.0
    cost = {lv: recorder_cost_s(lv, ctx) for lv in ("counts", "timing")}
    per_rank = {"rank": ctx.rank, "ops_per_round": ops_per_round, "cost_s_per_op": cost}
    result = None
    if stage.is_coordinator and ctx.rank == 0:
        med = {lv: statistics.median(v) for lv, v in times.items()}
        # Paired: each cycle (off, counts, timing) runs back to back; the median of the per-cycle
        # ratios resists the slow drifts of a shared machine better than a ratio of medians.
        paired = {
            lv: statistics.median(t / o for t, o in zip(times[lv], times["off"])) - 1
            for lv in ("counts", "timing")
        }
        result = {
            "tp_all_reduce": transport,
            "rounds": args.rounds,
            "tokens": args.tokens,
            "median_round_s": med,
            "overhead_counts": paired["counts"],
            "overhead_timing": paired["timing"],
        }
    everyone = [None] * ctx.env.world_size if ctx.rank == 0 else None
    if ctx.env.world_size > 1:
        dist.gather_object((uncovered, per_rank), everyone, dst=0)
    else:
        everyone = [(uncovered, per_rank)]
    if ctx.rank == 0:
        result["uncovered"] = {r: u for r, (u, _) in enumerate(everyone) if u}
        # Bound from the recorder's own cost: the busiest rank's ops per round x cost per op,
        # over the uninstrumented round time (immune to the machine's noise, unlike the ratio).
        busiest = max(everyone, key=lambda e: e[1]["ops_per_round"])[1]
        for lv in ("counts", "timing"):
            result[f"recorder_us_per_op_{lv}"] = busiest["cost_s_per_op"][lv] * 1e6
            result[f"overhead_bound_{lv}"] = (
                busiest["ops_per_round"]
                * busiest["cost_s_per_op"][lv]
                / result["median_round_s"]["off"]
            )
        result["ops_per_round_busiest_rank"] = busiest["ops_per_round"]
        result["coverage_ok"] = not result["uncovered"]
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
    hdist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
