"""The TP all-reduce on CPU ranks: gloo against the shared-memory exchange (run.cpu_all_reduce).

    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node 8 \\
        benchmarks/cpu_all_reduce.py [--ops 400] [--rounds 3] [--numel 2048] [--work 0]

8 ranks as 4 TP pairs (the demo's TP2-PP4 groups: ranks 2k, 2k+1), every pair all-reducing a
``--numel`` fp32 tensor (2048 = a decode step of 8 rows × hidden 256) ``--ops`` times per round,
with ``--work`` small matrix products between ops (0: back to back). Rounds alternate gloo, shm,
gloo, shm, ... so that the host's drift hits both alike; rank 0 prints the median over rounds of
the mean time per all-reduce (the slowest pair's), each round's value, and the ratio. Every shm
result is checked against gloo's on the same inputs first (bit for bit at TP2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.engines.reference.shm_allreduce import open_group  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--numel", type=int, default=2048)
    ap.add_argument("--work", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    pairs = [[r, r + 1] for r in range(0, world, 2)]
    groups = [dist.new_group(p) for p in pairs]
    pair, pg = pairs[rank // 2], groups[rank // 2]
    shm, why = open_group(pg, pair, rank, args.numel * 4, 60.0)
    if shm is None:
        raise SystemExit(f"shared memory unavailable: {why}")
    x = torch.randn(args.numel, generator=torch.Generator().manual_seed(rank))
    ref = x.clone()
    dist.all_reduce(ref, group=pg)
    assert torch.equal(shm(x.clone()), ref), "shm sum differs from gloo's"
    w, h = torch.randn(256, 256), torch.randn(8, 256)

    def op(kind: str) -> float:
        for _ in range(args.work):
            torch.tanh(h @ w)
        t = x.clone()
        t0 = time.perf_counter()
        if kind == "gloo":
            dist.all_reduce(t, group=pg)
        else:
            shm(t)
        return time.perf_counter() - t0

    per = {"gloo": [], "shm": []}
    for r in range(2 * args.rounds):
        kind = ("gloo", "shm")[r % 2]
        for _ in range(20):  # warm-up
            op(kind)
        dist.barrier()
        mean = sum(op(kind) for _ in range(args.ops)) / args.ops
        worst = torch.tensor([mean])
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        per[kind].append(worst.item() * 1e3)
    if rank == 0:
        med = {k: statistics.median(v) for k, v in per.items()}
        for k, v in per.items():
            print(
                f"{k}: {med[k]:.3f} ms per all-reduce (rounds: {', '.join(f'{x:.3f}' for x in v)})"
            )
        print(
            f"gloo / shm: {med['gloo'] / med['shm']:.2f}x ({world} ranks, {len(pairs)} pairs, "
            f"{args.numel} fp32, work {args.work}, {args.ops} ops x {args.rounds} rounds each)"
        )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
