"""torchrun entry for tests/test_distributed.py: ONE world of 8 gloo ranks runs every layout.

    torchrun --standalone --nproc-per-node 8 tests/dist_worker.py --out DIR --checkpoint CKPT

1. The wide-model memory check on tp2-pp4 (first, so that the peak-RSS reading is not masked by
   anything earlier): each rank builds its shard of a model whose full weights are ~160 MB.
2. For each layout (tp, pp, dp) in LAYOUTS, on ranks 0..tp*pp*dp-1 (the others only take part
   in creating the process groups, which torch requires of every rank), and for each weight
   source (seeded, checkpoint): greedy-generate 16 tokens for 4 prompts; the last stage's
   prefill logits are captured by a forward hook and gathered over TP.
3. tp2-pp2 with a vocabulary of 255 (ODD: tp does not divide it; the vocab-parallel shards are
   padded to 2 x 128 rows): the same generation, seeded weights.

Every rank writes ``DIR/rank{R}.json`` (atomically); the test compares with transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.engines.reference import dist as hdist  # noqa: E402
from harness.engines.reference.comm import Comm, CommRecorder  # noqa: E402
from harness.engines.reference.generate import generate  # noqa: E402
from harness.engines.reference.loop import ServeLoop  # noqa: E402
from harness.engines.reference.model.build import build_stage, stage_param_bytes  # noqa: E402
from harness.engines.reference.model.weights import CheckpointWeights, SeededWeights  # noqa: E402
from harness.engines.reference.parallel.pp import PipelineStage, StepMeta  # noqa: E402
from harness.engines.reference.parallel.tp import gather_logits, greedy_sample  # noqa: E402
from harness.engines.reference.scheduler import Scheduler  # noqa: E402
from harness.spec.catalog import ModelShape, model_preset  # noqa: E402
from harness.spec.layout import Layout, even_split  # noqa: E402
from harness.spec.workload import Request  # noqa: E402

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1), (2, 4, 1), (2, 2, 2)]
PROMPTS = [
    [17, 3, 250, 99, 41],
    [8, 8, 120, 7, 33, 201, 5, 64, 12],
    [200, 1, 77],
    [i * 37 % 256 for i in range(14)],
]
SEED = 7
NEW_TOKENS = 16
TIMEOUT_S = 60.0
# Full weights 159.4 MB fp32; one tp2-pp4 rank holds at most 24.1 MB of them.
WIDE = ModelShape(
    "wide",
    hidden=512,
    num_layers=8,
    num_heads=8,
    num_kv_heads=4,
    head_dim=64,
    intermediate=2048,
    vocab=8192,
    max_context=512,
    rope_theta=10000.0,
)

ODD = dataclasses.replace(model_preset("tiny"), name="tiny-vocab-255", vocab=255)


def label(tp, pp, dp) -> str:
    return f"tp{tp}-pp{pp}-dp{dp}"


class GroupCache:
    """Process groups by rank set, shared by every layout of the world (one group creation per
    distinct set; creating a gloo group costs a rendezvous of all 8 ranks). Every rank decides
    "new set?" from the same deterministic history, so all call ``new_group`` in the same order,
    as torch requires. A set's group may serve two roles (e.g. ranks {0,1} as TP of tp2-pp1 and
    PP of tp1-pp2): the layouts run one after another, so their ops never interleave."""

    def __init__(self, world: hdist.DistContext):
        self.world = world
        w = world.layout
        self.known = {
            tuple(g)
            for gs in (w.tp_groups(), w.pp_groups(), w.dp_groups())
            for g in gs
            if len(g) > 1
        }
        self.mine = {tuple(ranks): pg for pg, ranks in world.comm.groups.values() if len(ranks) > 1}

    def get(self, ranks: list[int]):
        key = tuple(ranks)
        if len(key) == 1:
            return None
        if key not in self.known:
            self.known.add(key)
            pg = dist.new_group(list(key), timeout=datetime.timedelta(seconds=TIMEOUT_S))
            if self.world.rank in key:
                self.mine[key] = pg
        return self.mine.get(key)


def sub_context(layout: Layout, cache: GroupCache) -> hdist.DistContext | None:
    """A DistContext for a layout on ranks 0..layout.world_size-1 of the larger world
    (harness.engines.reference.dist.init
    needs world == layout)."""
    world = cache.world
    groups = {"world": (None, list(range(world.env.world_size)))}
    for name, all_groups in (
        ("tp", layout.tp_groups()),
        ("pp", layout.pp_groups()),
        ("dp", layout.dp_groups()),
    ):
        for ranks in all_groups:
            pg = cache.get(ranks)
            if world.rank in ranks:
                groups[name] = (pg, ranks)
    if world.rank >= layout.world_size:
        return None
    comm = Comm(groups, CommRecorder(world.rank, "counts"))
    return hdist.DistContext(
        world.env, layout, layout.place(world.rank), world.device, world.backend, comm
    )


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_check(ctx: hdist.DistContext) -> dict:
    """Build this rank's shard of WIDE and report what it holds and what the process peaked at.

    Peak: Linux's VmHWM (peak resident set), reset to the current RSS just before the build by
    writing 5 to /proc/self/clear_refs; growth = VmHWM after - VmRSS before. It counts every
    byte the build touched (weights, transients, allocator slack), so a rank that materialised
    the full model (159 MB) would show it, whatever code path did it."""
    # Warm-up: the first meta-device model imports torch's meta kernels (~77 MB RSS, once per
    # process, whatever the model size); build the tiny model first so the reading sees only WIDE.
    warm = build_stage(
        model_preset("tiny"),
        ctx.layout,
        ctx.place,
        ctx.comm,
        dtype=torch.float32,
        device=ctx.device,
        weights=SeededWeights(0),
    )
    del warm
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    before = _rss_kib("VmRSS")
    weights = SeededWeights(SEED)
    model = build_stage(
        WIDE,
        ctx.layout,
        ctx.place,
        ctx.comm,
        dtype=torch.float32,
        device=ctx.device,
        weights=weights,
    )
    peak = _rss_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = dict(
        param_bytes=stage_param_bytes(model),
        returned_bytes=weights.stats.returned_bytes,
        peak_transient_bytes=weights.stats.peak_transient_bytes,
        rss_growth_bytes=(peak - before) * 1024,
        hwm_reset=reset,
        shapes={n: list(p.shape) for n, p in model.named_parameters()},
        devices=sorted({str(p.device) for p in model.parameters()}),
    )
    del model
    gc.collect()
    return out


def pipelined(stage: PipelineStage, prompts: list[list[int]], n: int) -> list[list[int]] | None:
    """Every prompt its own micro-batch (slot i), all of them in flight at once: the coordinator
    submits the next step of a sequence as soon as its previous token comes back."""
    if not stage.is_coordinator:
        stage.serve_forever()
        return None

    def t(xs):
        return torch.tensor(xs, dtype=torch.long, device=stage.device)

    outs: list[list[int]] = [[] for _ in prompts]
    pos, owner = [len(p) for p in prompts], {}
    for i, p in enumerate(prompts):
        assert stage.submit(StepMeta(i, t([i]), t([0]), t([len(p)])), t([p])) is None
        owner[i] = i
    step = len(prompts)
    while stage.in_flight:
        meta, tokens = stage.collect()
        i = owner.pop(meta.step)
        outs[i].append(int(tokens[0]))
        if len(outs[i]) < n:
            stage.submit(StepMeta(step, t([i]), t([pos[i]]), t([1])), tokens.view(1, 1))
            owner[step], pos[i], step = i, pos[i] + 1, step + 1
    stage.stop()
    return outs


def counted_serve(ctx: hdist.DistContext, stage: PipelineStage) -> dict:
    """The serving loop (4 requests, every micro-batch in flight) on the coordinator, the stage loop
    elsewhere, under ``SyncCounter``: what each rank's steps would make the host wait for on a GPU
    (tests/test_step_syncs.py)."""
    from sync_counter import SyncCounter

    with SyncCounter(dispatch=False) as counter:  # no Python mode around gloo's ops
        if stage.is_coordinator:
            reqs = [Request(i, 0.0, len(p), 6) for i, p in enumerate(PROMPTS)]
            sched = Scheduler(
                reqs,
                lambda r: PROMPTS[r.request_id],
                num_slots=len(PROMPTS),
                max_batch=len(PROMPTS),
                max_seq_len=64,
            )
            loop = ServeLoop(stage, ctx.layout.pp, ctx.device, time.monotonic, 0)
            assert loop.run(sched, time.monotonic())
            stage.stop()
            steps = len(loop.step_rows)
        else:
            steps = stage.serve_forever()
    return {"counts": dict(counter.counts), "where": dict(counter.where), "steps": steps}


def tie_check(ctx: hdist.DistContext) -> list[int]:
    """Vocab-parallel argmax on crafted slices of 128: row 0 ties across ranks (id 5 on each)
    -> the lowest global id, 5; row 1's maximum is on rank 1 at local 3 -> 128*1 + 3."""
    local = torch.zeros(2, 128)
    local[0, 5] = 1.0
    if ctx.place.tp == 1:
        local[1, 3] = 2.0
    return greedy_sample(local, ctx.comm).tolist()


def run_layout(ctx: hdist.DistContext, weights_name: str, checkpoint: str) -> dict:
    shape = model_preset("tiny")
    weights = SeededWeights(SEED) if weights_name == "seeded" else CheckpointWeights(checkpoint)
    model = build_stage(
        shape,
        ctx.layout,
        ctx.place,
        ctx.comm,
        dtype=torch.float32,
        device=ctx.device,
        weights=weights,
    )
    model.allocate_kv(len(PROMPTS), 64)
    captured: list[torch.Tensor] = []
    if model.is_last:
        model.register_forward_hook(
            lambda _m, _i, out: captured.append(out.clone()) if not captured else None
        )
    stage = PipelineStage(ctx, model, max_batch=len(PROMPTS), max_tokens=len(PROMPTS) * 16)
    prompts = PROMPTS if ctx.place.dp == 0 else PROMPTS[::-1]  # replica 1 gets another row order
    ctx.comm.rec.rows.clear()
    tokens = generate(ctx, stage, prompts, NEW_TOKENS)
    ops = Counter(f"{r['op']}/{r['group']}/{r['phase']}" for r in ctx.comm.rec.as_dicts())
    steps = len(stage.timings)
    logits = None
    if model.is_last:
        full = gather_logits(captured[0], ctx.comm)
        if ctx.place.tp == 0:
            logits = full.tolist()
    extra = {}
    if weights_name == "seeded" and ctx.layout.pp > 1:
        extra["pipelined_tokens"] = pipelined(stage, prompts, NEW_TOKENS)
    steps_total = len(stage.timings)  # generate's and pipelined's steps (not the counted ones)
    if weights_name == "seeded" and (ctx.layout.tp, ctx.layout.pp) == (2, 4):
        extra["syncs"] = counted_serve(ctx, stage)
    if weights_name == "seeded" and ctx.layout.tp > 1 and model.is_last:
        extra["tie_check"] = tie_check(ctx)
    p = ctx.place
    return dict(
        layout=label(ctx.layout.tp, ctx.layout.pp, ctx.layout.dp),
        weights=weights_name,
        rank=ctx.rank,
        dp=p.dp,
        stage=p.stage,
        tp=p.tp,
        layers=list(model.layer_ids),
        param_bytes=stage_param_bytes(model),
        tokens=tokens,
        prompt_order="reversed" if p.dp else "as-given",
        logits=logits,
        ops=dict(ops),
        steps=steps,
        steps_total=steps_total,
        **extra,
    )


def odd_vocab_run(ctx: hdist.DistContext) -> dict:
    """tp2-pp2 of ODD: the shards of the embedding and lm_head hold 128 rows each, rank tp=1's last
    one padding whose logit must never win."""
    model = build_stage(
        ODD,
        ctx.layout,
        ctx.place,
        ctx.comm,
        dtype=torch.float32,
        device=ctx.device,
        weights=SeededWeights(SEED),
    )
    model.allocate_kv(len(PROMPTS), 64)
    captured: list[torch.Tensor] = []
    if model.is_last:
        model.register_forward_hook(
            lambda _m, _i, out: captured.append(out.clone()) if not captured else None
        )
    stage = PipelineStage(ctx, model, max_batch=len(PROMPTS), max_tokens=len(PROMPTS) * 16)
    tokens = generate(ctx, stage, PROMPTS, NEW_TOKENS)
    logits = gather_logits(captured[0], ctx.comm, ODD.vocab).tolist() if model.is_last else None
    return dict(
        rank=ctx.rank,
        stage=ctx.place.stage,
        tp=ctx.place.tp,
        tokens=tokens,
        param_bytes=stage_param_bytes(model),
        logits=logits if ctx.place.tp == 0 else None,
        local_logit_columns=len(captured[0][0]) if captured else None,
        last_local_logit=float(captured[0][:, -1].max()) if captured else None,
        shapes={
            n: list(p.shape) for n, p in model.named_parameters() if "embed" in n or "lm_head" in n
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)  # 8 ranks on 2 cores
    full = Layout(2, 4, 1, even_split(8, 4))
    world = hdist.init(full, "cpu", None, TIMEOUT_S, "counts")
    result = {"rank": world.rank, "memory": memory_check(world), "runs": []}
    cache = GroupCache(world)
    for tp, pp, dp in LAYOUTS:
        layout = Layout(tp, pp, dp, even_split(8, pp))
        ctx = world if (tp, pp, dp) == (2, 4, 1) else sub_context(layout, cache)
        if ctx is not None:
            for weights_name in ("seeded", "checkpoint"):
                result["runs"].append(run_layout(ctx, weights_name, args.checkpoint))
        world.comm.barrier("world")
    ctx = sub_context(Layout(2, 2, 1, even_split(8, 2)), cache)
    result["odd_vocab"] = odd_vocab_run(ctx) if ctx is not None else None
    world.comm.barrier("world")
    out = Path(args.out) / f"rank{world.rank}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)
    hdist.shutdown()


if __name__ == "__main__":
    main()
