"""Host synchronisations per serving step, counted on the CPU (issue 28 item 2; issue 26 finding 5).

On CUDA every read of a device tensor, every blocking upload and every op whose output size
depends on values makes the host wait for the device, so the coordinator cannot queue step k+1
while step k runs. ``SyncCounter`` (tests/sync_counter.py) counts them on the CPU twin, where
none of them costs anything and nothing else would notice. The contract: the coordinator's step
reads the device once, for the sampled tokens; it uploads the step's integers without blocking;
nothing else. The other stages' share (no read at all) is checked in the 8-rank world
(tests/test_distributed.py, ``test_no_stage_waits_for_the_device``)."""

from __future__ import annotations

import torch

from harness.engines.reference.comm import single_process_comm
from harness.engines.reference.dist import DistContext, LaunchEnv
from harness.engines.reference.loop import STEP_COLUMNS, ServeLoop
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import SeededWeights
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.scheduler import Scheduler
from harness.spec.catalog import model_preset
from harness.spec.layout import Layout
from harness.spec.workload import Request
from sync_counter import SyncCounter

CPU = torch.device("cpu")


def _stage() -> PipelineStage:
    shape = model_preset("tiny")
    layout = Layout(1, 1, 1, (shape.num_layers,))
    comm = single_process_comm(level="timing")
    model = build_stage(
        shape,
        layout,
        layout.place(0),
        comm,
        dtype=torch.float32,
        device=CPU,
        weights=SeededWeights(3),
    )
    model.allocate_kv(4, 64)
    ctx = DistContext(
        LaunchEnv(0, 1, 0, 1, None, False), layout, layout.place(0), CPU, "gloo", comm
    )
    return PipelineStage(ctx, model, max_batch=4, max_tokens=64)


def _serve(stage: PipelineStage, reqs):
    sched = Scheduler(
        reqs,
        lambda r: [(7 * r.request_id + i) % 200 + 1 for i in range(r.input_len)],
        num_slots=4,
        max_batch=4,
        max_seq_len=64,
    )
    loop = ServeLoop(stage, 1, CPU, lambda: 0.0, 0, sleep=lambda s: None)
    with SyncCounter() as counter:
        assert loop.run(sched, 0.0)
    return counter, [dict(zip(STEP_COLUMNS, r)) for r in loop.step_rows], sched


def test_the_coordinator_step_reads_the_device_once_for_its_tokens():
    """Three requests (prefill, then decode; one joins late as a mixed step): every step,
    whatever its phase, reads the device exactly once (its sampled tokens) and uploads nothing
    blocking. Before issue 28 a step read the rows three times (``BatchIndex``'s tolist) and
    uploaded four tensors blocking (``torch.tensor(..., device=)`` and ``ids.to(device)``)."""
    reqs = [Request(0, 0.0, 5, 6), Request(1, 0.0, 3, 4), Request(2, 0.0, 9, 3)]
    counter, steps, sched = _serve(_stage(), reqs)
    phases = {s["phase"] for s in steps}
    assert {"prefill", "decode"} <= phases, phases
    assert counter.counts == {"read": len(steps)}, counter.report()
    assert [len(r.token_times_s) for r in sched.records] == [6, 4, 3]


def test_the_counter_sees_each_kind_of_wait():
    """The counter itself: a read, a value-sized output, a blocking upload each count once; a
    non-blocking copy and ops of known size count nothing."""
    x = torch.arange(6)
    with SyncCounter() as c:
        x.tolist()
        int(x[0])
        x[x > 2]
        torch.repeat_interleave(x[:2], torch.tensor([1, 2]))
        torch.repeat_interleave(x[:2], torch.tensor([1, 2]), output_size=3)
        torch.tensor([1, 2], device=CPU)
        x.to(CPU)
        x.to(CPU, non_blocking=True)
        x + 1
    assert c.counts == {"read": 2, "shape": 2, "upload": 2}, c.report()


def test_without_the_dispatch_mode_the_python_entry_points_count_the_same():
    """The world's ranks count with ``dispatch=False`` (no Python mode around gloo's ops): the
    same serving loop gives the same count."""
    reqs = [Request(0, 0.0, 5, 6), Request(1, 0.0, 3, 4)]
    stage = _stage()
    sched = Scheduler(reqs, lambda r: [3] * r.input_len, num_slots=4, max_batch=4, max_seq_len=64)
    loop = ServeLoop(stage, 1, CPU, lambda: 0.0, 0, sleep=lambda s: None)
    with SyncCounter(dispatch=False) as counter:
        assert loop.run(sched, 0.0)
    assert counter.counts == {"read": len(loop.step_rows)}, counter.report()
    x = torch.arange(4)
    with SyncCounter(dispatch=False) as c:
        int(x[0]), bool(x[1]), x.nonzero()
        torch.repeat_interleave(x, x), torch.repeat_interleave(x, x, output_size=6)
    assert c.counts == {"read": 2, "shape": 2}, c.report()
