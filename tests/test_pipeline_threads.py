"""TP2-PP4 of the real tiny model in one process: 8 ranks as threads, torch.distributed replaced by
tests/nccl_streams.py's ``FakeDist`` (queues between threads, real data). The serving loop's
greedy tokens equal one rank's, and no rank's step waits for a device it does not have to
(issue 28 item 2, counted per thread by tests/sync_counter.py). The same checks on gloo, 8
processes: tests/test_distributed.py."""

from __future__ import annotations

import itertools
import threading

import torch

from harness.engines.reference import comm as comm_mod
from harness.engines.reference import dist as hdist
from harness.engines.reference.comm import Comm, CommRecorder
from harness.engines.reference.loop import ServeLoop
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import SeededWeights
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.scheduler import Scheduler
from harness.spec.catalog import model_preset
from harness.spec.layout import Layout
from harness.spec.workload import Request
from nccl_streams import FakeDist, _World
from sync_counter import SyncCounter

CPU = torch.device("cpu")
PROMPTS = [[17, 3, 250, 99, 41], [8, 8, 120, 7, 33, 201, 5], [200, 1, 77], [9, 12]]


def _sched() -> Scheduler:
    reqs = [Request(i, 0.0, len(p), 6) for i, p in enumerate(PROMPTS)]
    return Scheduler(
        reqs, lambda r: PROMPTS[r.request_id], num_slots=4, max_batch=4, max_seq_len=64
    )


def _stage(layout: Layout, rank: int, comm: Comm) -> PipelineStage:
    place = layout.place(rank)
    ctx = hdist.DistContext(
        hdist.LaunchEnv(rank, layout.world_size, rank, layout.world_size, None, True),
        layout,
        place,
        CPU,
        "gloo",
        comm,
    )
    model = build_stage(
        model_preset("tiny"),
        layout,
        place,
        comm,
        dtype=torch.float32,
        device=CPU,
        weights=SeededWeights(7),
    )
    model.allocate_kv(4, 64)
    return PipelineStage(ctx, model, max_batch=4, max_tokens=64)


def _one_rank_tokens() -> dict[int, list[int]]:
    layout = Layout(1, 1, 1, (8,))
    stage = _stage(layout, 0, comm_mod.single_process_comm())
    sched = _sched()
    ServeLoop(stage, 1, CPU, lambda: 0.0, 0, sleep=lambda s: None).run(sched, 0.0)
    return sched.outputs


def test_tp2_pp4_in_threads_serves_one_ranks_tokens_without_host_waits(monkeypatch):
    want = _one_rank_tokens()
    layout = Layout(2, 4, 1, (2, 2, 2, 2))
    world = _World(layout)
    monkeypatch.setattr(comm_mod, "dist", FakeDist(world))
    stages = {}
    for rank in range(layout.world_size):
        index = itertools.count()
        groups, p2p = hdist.make_groups(
            layout, rank, lambda ranks, index=index: ("pg", next(index), tuple(ranks))
        )
        rec = CommRecorder(rank, "timing")
        world.steps[rank] = rec
        stages[rank] = _stage(layout, rank, Comm(groups, rec, p2p))
    out, errors, idents, steps = {}, [], {}, {}
    hooked: list[int] = []  # a stage's forward hooks see its steps (tests capture logits so)
    stages[6].model.register_forward_hook(lambda _m, _i, o: hooked.append(o.shape[0]))

    def run(rank: int) -> None:
        world.local.rank = rank
        idents[threading.get_ident()] = rank
        try:
            stage = stages[rank]
            if stage.is_coordinator:
                sched = _sched()
                loop = ServeLoop(stage, 4, CPU, lambda: 0.0, 0, sleep=lambda s: None)
                loop.run(sched, 0.0)
                stage.stop()
                out.update(sched.outputs)
                steps[rank] = len(loop.step_rows)
            else:
                steps[rank] = stage.serve_forever()
        except BaseException as e:  # reported below
            errors.append(e)

    with SyncCounter(dispatch=False) as counter:
        threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in stages]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    assert out == want and all(len(v) == 6 for v in want.values())
    assert len(hooked) == steps[6] and hooked[0] >= 1
    n = steps[0]
    for ident, rank in idents.items():
        got = dict(counter.by_thread.get(ident, {}))
        expect = {"read": n, "header": n} if rank == 0 else {"header": steps[rank] + 1}
        assert got == expect, (rank, got, counter.report())
