"""Decode step time against context, side by side in one process: does attention cost what its bytes
do?

    python benchmarks/decode_context.py configs/llama3-8b-tp2-pp8-cpu.yaml --stage 1 --batch 32 \
        --contexts 128,1024 --rounds 5 --out /tmp/decode_context.json

One rank of the spec (TP rank 0 of ``--stage``) is built with seeded weights, its KV cache sized
for the longest context and filled with random values. Each round times one decode step of
``--batch`` rows at every context in turn (the median of ``--iters`` steps), then the copy
bandwidth (a 512 MiB copy, the fastest of 5): the contexts and the ceiling see the same machine
moment, so a shared machine's drift hits them alike. Per context: the median over rounds.

    bytes(c)     = planner.stage_bytes_read(stage, B rows, 1 token, context c)
    cost ratio   = (t(c_max) / t(c_min)) / (bytes(c_max) / bytes(c_min))   (1: time grows like
    bytes) % copy BW    = bytes(c) / t(c) / copy bandwidth

Only the model's public forward (padded ``[B, 1]`` inputs) is used, so the same script times an
older checkout too (``PYTHONPATH=<checkout> python benchmarks/decode_context.py ...``): that is
how docs/performance.md compares before and after. """

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from harness.emulate import rank_comm
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import SeededWeights
from harness.plan import planner
from harness.spec.spec import load_spec

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def copy_gbps(nbytes: int = 512 * 2**20, iters: int = 5) -> float:
    src = torch.empty(nbytes // 4).uniform_(-1, 1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_time(lambda: dst.copy_(src)) for _ in range(iters))
    return 2 * nbytes / best / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--contexts", default="128,1024")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    spec = load_spec(args.config)
    contexts = [int(c) for c in args.contexts.split(",")]
    lay, b = spec.layout, args.batch
    rank = lay.rank_of(0, args.stage, 0)
    place = lay.place(rank)
    dtype = DTYPES[spec.model.dtype]
    cpu = torch.device("cpu")
    model = build_stage(
        spec.shape,
        lay,
        place,
        rank_comm(lay, rank),
        dtype=dtype,
        device=cpu,
        weights=SeededWeights(spec.run.seed),
    )
    model.allocate_kv(b, max(contexts) + 1)
    gen = torch.Generator().manual_seed(1)
    for layer in model.model.layers.values():
        for c in (layer.self_attn.k_cache, layer.self_attn.v_cache):
            c.copy_(torch.randn(c.shape, generator=gen).to(c.dtype))
    x = (
        torch.randint(0, spec.shape.vocab, (b, 1), generator=gen)
        if model.is_first
        else torch.randn(b, 1, spec.shape.hidden, generator=gen).to(dtype)
    )
    slots, ones = torch.arange(b), torch.ones(b, dtype=torch.long)
    times = {c: [] for c in contexts}
    copies = []
    for c in contexts:  # warm-up, not timed
        model(x, slots, torch.full((b,), c), ones)
    for r in range(args.rounds):
        for c in contexts:
            start = torch.full((b,), c)
            times[c].append(
                statistics.median(
                    _time(lambda: model(x, slots, start, ones)) for _ in range(args.iters)
                )
            )
        copies.append(copy_gbps())
        print(
            f"round {r}: "
            + ", ".join(f"ctx {c} {times[c][-1] * 1e3:.1f} ms" for c in contexts)
            + f", copy {copies[-1]:.1f} GB/s",
            file=sys.stderr,
            flush=True,
        )
    bw = statistics.median(copies)
    out = {
        "config": args.config,
        "stage": args.stage,
        "rank": rank,
        "batch": b,
        "rounds": args.rounds,
        "iters": args.iters,
        "copy_gbps": bw,
        "points": [],
    }
    for c in contexts:
        nbytes = planner.stage_bytes_read(spec.shape, lay, args.stage, spec.dtype_bytes, b, 1, c)
        t = statistics.median(times[c])
        out["points"].append(
            {
                "context": c,
                "step_s": t,
                "bytes": nbytes,
                "gbps": nbytes / t / 1e9,
                "copy_frac": nbytes / t / 1e9 / bw,
                "step_s_rounds": times[c],
            }
        )
    lo, hi = out["points"][0], out["points"][-1]
    out["time_ratio"] = hi["step_s"] / lo["step_s"]
    out["bytes_ratio"] = hi["bytes"] / lo["bytes"]
    out["cost_ratio"] = out["time_ratio"] / out["bytes_ratio"]
    for p in out["points"]:
        print(
            f"ctx {p['context']}: {p['step_s'] * 1e3:.1f} ms, {p['bytes'] / 1e9:.3f} GB, "
            f"{p['gbps']:.2f} GB/s, "
            f"{p['copy_frac']:.0%} of copy {bw:.1f} GB/s"
        )
    print(
        f"time ratio {out['time_ratio']:.3f} / bytes ratio {out['bytes_ratio']:.3f} = "
        f"{out['cost_ratio']:.3f}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
