"""Stage timing by device events: no host synchronize per step (a scripted stand-in for
torch.cuda, as tests/test_comm_recorder.py does; no GPU here)."""

from __future__ import annotations

import pytest
import torch

from harness.engines.reference.comm import single_process_comm
from harness.engines.reference.dist import DistContext, LaunchEnv
from harness.engines.reference.generate import generate
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import SeededWeights
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.parallel.stage_clock import STAMPS, StageClock
from harness.spec.layout import Layout


class FakeEvent:
    clock_ms = 0.0  # the "device" clock: advanced by each record()
    done_up_to_ms = 1e18  # events recorded at or before this have completed

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        FakeEvent.clock_ms += 1.0
        self.t = FakeEvent.clock_ms

    def query(self):
        return self.t <= FakeEvent.done_up_to_ms

    def elapsed_time(self, other):
        return other.t - self.t


def _fake_cuda(monkeypatch) -> list:
    syncs = []
    FakeEvent.clock_ms, FakeEvent.done_up_to_ms = 0.0, 1e18
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    return syncs


def test_events_resolve_without_a_sync_per_step(monkeypatch):
    syncs = _fake_cuda(monkeypatch)
    clock = StageClock(cuda=True)
    clock.RESOLVE_EVERY = 3
    for step in range(2):
        clock.add(step, [clock.stamp() for _ in STAMPS])
    assert len(syncs) == 2 and not clock.rows  # the base event's two, at the first stamp
    FakeEvent.done_up_to_ms = 9.0  # step 2's last event (t = 13) not finished
    clock.add(2, [clock.stamp() for _ in STAMPS])  # 3 pending: non-blocking resolve
    assert (
        len(syncs) == 2 and [r["step"] for r in clock.rows] == [0, 1] and len(clock._pending) == 1
    )
    rows = clock.resolve()  # end of window: one sync, everything
    assert len(syncs) == 3 and [r["step"] for r in rows] == [0, 1, 2]
    base = clock._base_s
    # base recorded at t = 1; step k's stamps at t = 2 + 4k .. 5 + 4k (ms)
    for k, r in enumerate(rows):
        assert [(r[s] - base) * 1e3 for s in STAMPS] == pytest.approx(
            [1.0 + 4 * k + i for i in range(4)], abs=1e-6
        )


def test_pipeline_stage_times_steps_without_synchronizing(tiny, prompts, monkeypatch):
    """A real stage (one rank, the tiny model on CPU) with the CUDA clock: 16 generated tokens are
    16 timed steps, and the device was synchronized only to set the base and to resolve at the
    end."""
    layout = Layout(1, 1, 1, (tiny.num_layers,))
    comm = single_process_comm()
    cpu = torch.device("cpu")
    model = build_stage(
        tiny,
        layout,
        layout.place(0),
        comm,
        dtype=torch.float32,
        device=cpu,
        weights=SeededWeights(7),
    )
    model.allocate_kv(8, 64)
    ctx = DistContext(
        LaunchEnv(0, 1, 0, 1, None, False), layout, layout.place(0), cpu, "none", comm
    )
    stage = PipelineStage(ctx, model, max_batch=4, max_tokens=64)
    syncs = _fake_cuda(monkeypatch)
    stage.clock = StageClock(cuda=True)
    generate(ctx, stage, prompts, 16)
    assert len(syncs) == 2  # base only: none per step
    rows = stage.timings
    assert len(syncs) == 3 and [r["step"] for r in rows] == list(range(16))
    for r in rows:
        assert r["t_recv_start"] < r["t_recv_end"] < r["t_compute_end"] < r["t_send_end"]
