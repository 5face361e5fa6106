"""The serving loop's clock against a device that runs asynchronously (issue 26, finding 2).

On CUDA ``PipelineStage.submit`` returns when the step is queued; the tokens exist only when the
device has run it. ``DeviceClock`` advances only when the host waits for the device, so a time
read before the tokens are read is a queue time: these tests fail if the loop stamps a token,
a first token, a finish or ``steps.t_done_s`` before it has the tokens on the host."""

from __future__ import annotations

import pytest

from fake_device import DeviceClock, FakeStage
from harness.engines.reference.loop import STEP_COLUMNS, ServeLoop
from harness.engines.reference.scheduler import Scheduler
from harness.spec.workload import Request

STEP_S = 0.25  # device time of one step (every stage together)


def _serve(pp: int, groups: int):
    clock = DeviceClock()
    stage = FakeStage(clock, STEP_S / pp, pp)
    reqs = [Request(0, 0.0, 4, 3), Request(1, 0.0, 2, 2)]
    sched = Scheduler(reqs, lambda r: [7] * r.input_len, num_slots=2, max_batch=2, max_seq_len=16)
    loop = ServeLoop(stage, groups, "cpu", clock, 0, sleep=clock.sleep)
    assert loop.run(sched, 0.0)
    steps = [dict(zip(STEP_COLUMNS, row)) for row in loop.step_rows]
    return {r.request_id: r for r in sched.records}, steps


def test_token_times_are_when_the_tokens_exist_not_when_the_step_was_queued():
    """pp = 1 (one GPU, every TP-only layout): both requests prefill in step 0 (done at 0.25 s),
    then decode one token per step: request 1 finishes with step 1 (0.5 s), request 0 with
    step 2 (0.75 s). Read before the tokens, every time would be one step early (0, .25, .5)."""
    recs, steps = _serve(pp=1, groups=1)
    assert [s["t_done_s"] for s in steps] == [0.25, 0.5, 0.75]
    assert [s["t_submit_s"] for s in steps] == [0.0, 0.25, 0.5]
    assert recs[0].first_token_s == recs[1].first_token_s == pytest.approx(0.25)
    assert recs[0].token_times_s == pytest.approx([0.25, 0.5, 0.75])
    assert recs[1].token_times_s == pytest.approx([0.25, 0.5])
    assert recs[0].finish_s == pytest.approx(0.75) and recs[1].finish_s == pytest.approx(0.5)


def test_pipelined_token_times_follow_the_device_too():
    """pp = 2 with two micro-batches in flight: each request rides its own micro-batch (max_batch
    2, but the second is scheduled while the first is in flight), and its tokens are stamped when
    the device has finished the step that made them."""
    recs, steps = _serve(pp=2, groups=2)
    for s in steps:  # a step is done no earlier than a whole pass of the device after its submit
        assert s["t_done_s"] >= s["t_submit_s"] + STEP_S - 1e-12
    done = {s["step"]: s["t_done_s"] for s in steps}
    assert sorted(done.values()) == list(done.values())  # returned in submission order
    for r in recs.values():
        assert r.first_token_s == r.token_times_s[0] and r.finish_s == r.token_times_s[-1]
        assert set(r.token_times_s) <= set(done.values())


def test_the_loop_waits_with_work_available_only_when_the_pipeline_is_full():
    """pp = 4, four micro-batches of one sequence each, 12 requests arriving faster than the
    device serves them: work waits, and whenever the coordinator stopped to collect tokens with a
    sequence ready to go, all four micro-batches were in flight (the demo run on this host is now
    too fast for work to wait: tests/test_run.py checks the same rule there, where it can)."""
    clock = DeviceClock()
    pp = 4
    stage = FakeStage(clock, STEP_S / pp, pp)
    reqs = [Request(i, 0.01 * i, 3, 4) for i in range(12)]
    sched = Scheduler(reqs, lambda r: [7] * r.input_len, num_slots=12, max_batch=1, max_seq_len=16)
    loop = ServeLoop(stage, pp, "cpu", clock, 0, sleep=clock.sleep)
    assert loop.run(sched, 0.0)
    steps = [dict(zip(STEP_COLUMNS, row)) for row in loop.step_rows]
    waited = [s for s in steps if s["available"] > 0]
    assert len(waited) > len(steps) // 4  # the workload makes work wait
    assert all(s["in_flight"] == pp for s in waited)
    assert max(s["in_flight"] for s in steps) == pp
    assert all(r.finish_s is not None for r in sched.records)
