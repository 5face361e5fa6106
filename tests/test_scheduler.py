"""Continuous batching decisions, without a model: a fake 'model' echoes a token per row."""

import pytest

from harness.engines.reference.scheduler import Scheduler
from harness.spec.workload import Request


def _reqs(specs):
    return [Request(i, t, n_in, n_out) for i, (t, n_in, n_out) in enumerate(specs)]


def _prompt(req):
    return [req.request_id + 1] * req.input_len


def _drain(s, groups, now=0.0):
    """Run the scheduler to the end with up to ``groups`` micro-batches in flight, tokens = step
    number."""
    in_flight = []
    history = []
    while not s.done():
        s.release(now)
        while len(in_flight) < groups:
            b = s.schedule(now, groups - len(in_flight))
            if b is None:
                break
            in_flight.append(b)
        history.append(len(in_flight))
        assert in_flight, "scheduler stalled with work left"
        b = in_flight.pop(0)
        now += 1.0
        s.complete(b, [1000 + b.step] * len(b.rows), now)
    return history


def test_prefill_then_decode_rows_and_positions():
    s = Scheduler(_reqs([(0, 3, 2)]), _prompt, num_slots=2, max_batch=4, max_seq_len=8)
    s.release(0.0)
    b = s.schedule(0.0)
    assert b.phase == "prefill" and b.rows[0].tokens == [1, 1, 1] and b.rows[0].start_pos == 0
    assert s.schedule(0.0) is None  # its only sequence is in flight
    s.complete(b, [7], 0.5)
    b2 = s.schedule(0.5)
    assert b2.phase == "decode" and b2.rows[0].tokens == [7] and b2.rows[0].start_pos == 3
    assert s.complete(b2, [9], 0.75) == 1
    rec = s.records[0]
    assert rec.first_token_s == 0.5 and rec.token_times_s == [0.5, 0.75] and rec.finish_s == 0.75
    assert s.outputs[0] == [7, 9] and s.done() and s.free_slots  # slot returned


def test_one_token_output_finishes_at_prefill():
    s = Scheduler(_reqs([(0, 4, 1)]), _prompt, num_slots=1, max_batch=1, max_seq_len=8)
    s.release(0)
    s.complete(s.schedule(0), [5], 1.0)
    assert s.done() and s.records[0].completed and s.records[0].token_times_s == [1.0]


def test_chunked_prefill_emits_token_only_at_the_end():
    s = Scheduler(
        _reqs([(0, 5, 2)]), _prompt, num_slots=1, max_batch=1, max_seq_len=8, prefill_chunk=2
    )
    s.release(0)
    starts = []
    for t in range(3):
        b = s.schedule(t)
        starts.append((b.rows[0].start_pos, len(b.rows[0].tokens), b.rows[0].ends_prefill))
        s.complete(b, [42], t + 1)
    assert starts == [(0, 2, False), (2, 2, False), (4, 1, True)]
    assert s.records[0].first_token_s == 3 and s.outputs == {}


def test_admission_waits_for_free_slots_and_queue_delay_is_recorded():
    s = Scheduler(
        _reqs([(0, 2, 2), (0, 2, 2), (0, 2, 2)]), _prompt, num_slots=2, max_batch=4, max_seq_len=8
    )
    _drain(s, 1)
    admitted = sorted(r.admitted_s for r in s.records)
    assert admitted[:2] == [0.0, 0.0] and admitted[2] > 0.0  # the third waited for a slot
    assert all(r.completed for r in s.records)


def test_waiting_requests_fill_every_micro_batch():
    # 8 requests waiting, 4 micro-batches: each takes 2, so 4 are in flight.
    s = Scheduler(_reqs([(0, 4, 3)] * 8), _prompt, num_slots=16, max_batch=8, max_seq_len=16)
    history = _drain(s, 4)
    assert history[0] == 4
    assert not s.running and len(s.outputs) == 8


def test_five_sequences_fill_four_micro_batches():
    s = Scheduler(_reqs([(0, 4, 3)] * 5), _prompt, num_slots=16, max_batch=8, max_seq_len=16)
    s.release(0)
    sizes = [len(s.schedule(0, free).rows) for free in (4, 3, 2, 1)]
    assert sizes == [2, 1, 1, 1] and s.available() == 0


def test_open_loop_release_by_arrival_time():
    s = Scheduler(
        _reqs([(0.0, 2, 1), (5.0, 2, 1)]), _prompt, num_slots=4, max_batch=4, max_seq_len=8
    )
    s.release(1.0)
    assert len(s.waiting) == 1 and s.next_arrival() == 5.0
    s.release(5.0)
    assert len(s.waiting) == 2 and s.next_arrival() is None


def test_closed_loop_releases_one_per_finish():
    s = Scheduler(
        _reqs([(0, 2, 1)] * 5),
        _prompt,
        num_slots=8,
        max_batch=8,
        max_seq_len=8,
        closed_loop_concurrency=2,
    )
    assert len(s.waiting) == 2
    b = s.schedule(0.0)
    assert len(b.rows) == 2
    s.complete(b, [1, 1], 2.0)
    assert len(s.waiting) == 2 and [r.arrival_s for r in s.records[2:]] == [2.0, 2.0]


def test_request_longer_than_slot_is_rejected():
    with pytest.raises(ValueError, match="exceed the KV slot"):
        Scheduler(_reqs([(0, 6, 4)]), _prompt, num_slots=1, max_batch=1, max_seq_len=8)


def test_token_budget_decode_rows_first_then_prefill_chunks_fill_the_rest():
    # 3 sequences decoding, then a 20-token prompt arrives: budget 8 = 3 decode tokens + a 5-token
    # chunk.
    s = Scheduler(
        _reqs([(0, 2, 9), (0, 2, 9), (0, 2, 9), (1, 20, 2)]),
        _prompt,
        num_slots=4,
        max_batch=4,
        max_seq_len=32,
        token_budget=8,
    )
    s.release(0)
    first = s.schedule(0)
    assert [len(r.tokens) for r in first.rows] == [2, 2, 2] and first.n_tokens == 6
    s.complete(first, [7, 7, 7], 0.5)
    s.release(1)
    b = s.schedule(1)
    assert [(r.is_prefill, r.start_pos, len(r.tokens)) for r in b.rows] == [(False, 2, 1)] * 3 + [
        (True, 0, 5)
    ]
    assert b.n_tokens == 8 and not b.rows[-1].ends_prefill
    s.complete(b, [8, 8, 8, 99], 1.5)
    b = s.schedule(1.5)  # the prompt goes on where it stopped
    assert [(r.is_prefill, r.start_pos, len(r.tokens)) for r in b.rows][-1] == (True, 5, 5)


def test_token_budget_is_shared_by_prefills_and_never_exceeded():
    s = Scheduler(
        _reqs([(0, 6, 2), (0, 6, 2), (0, 13, 3)]),
        _prompt,
        num_slots=3,
        max_batch=3,
        max_seq_len=32,
        token_budget=8,
    )
    s.release(0)
    b = s.schedule(0)
    assert [len(r.tokens) for r in b.rows] == [6, 2]  # the second prompt gets what the first leaves
    seen, in_flight, now = [], [b], 1.0
    while in_flight:
        done = in_flight.pop(0)
        seen.append(done.n_tokens)
        s.complete(done, [5] * len(done.rows), now)
        now += 1
        nxt = s.schedule(now)
        if nxt is not None:
            in_flight.append(nxt)
    assert s.done() and max(seen) <= 8
    assert {rid: len(t) for rid, t in s.outputs.items()} == {0: 2, 1: 2, 2: 3}
    assert all(r.completed and len(r.token_times_s) == r.output_len for r in s.records)


def test_prefill_chunk_caps_each_row_under_the_budget():
    s = Scheduler(
        _reqs([(0, 10, 1), (0, 10, 1)]),
        _prompt,
        num_slots=2,
        max_batch=2,
        max_seq_len=16,
        prefill_chunk=3,
        token_budget=16,
    )
    s.release(0)
    assert [len(r.tokens) for r in s.schedule(0).rows] == [3, 3]


def test_token_budget_below_max_batch_is_refused():
    with pytest.raises(ValueError, match="token_budget 3 < max_batch 4"):
        Scheduler(
            _reqs([(0, 2, 2)]), _prompt, num_slots=1, max_batch=4, max_seq_len=8, token_budget=3
        )


def _in_flight_max(records) -> int:
    """The most requests in flight at one instant, from [send, finish) intervals (a request sent at
    another's finish time follows it)."""
    events = sorted(
        [(r.finish_s, -1) for r in records] + [(r.sent_s or r.arrival_s, 1) for r in records]
    )
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_max_in_flight_holds_arrivals_until_a_finish():
    # 6 requests due at once, 2 output tokens each, a cap of 2: they go in pairs, each pair sent at
    # the finish of the pair before it
    s = Scheduler(
        _reqs([(0.0, 2, 2)] * 6), _prompt, num_slots=8, max_batch=8, max_seq_len=8, max_in_flight=2
    )
    _drain(s, groups=1)
    recs = sorted(s.records, key=lambda r: r.request_id)
    assert all(r.completed for r in recs) and _in_flight_max(recs) == 2
    assert [r.sent_s for r in recs] == [None, None, 2.0, 2.0, 4.0, 4.0]
    assert [r.admitted_s for r in recs] == [0.0, 0.0, 2.0, 2.0, 4.0, 4.0]
    assert [r.finish_s for r in recs] == [2.0, 2.0, 4.0, 4.0, 6.0, 6.0]
    # the arrival stays the scheduled one: TTFT from the arrival includes the client-side wait
    assert all(r.arrival_s == 0.0 for r in recs)


def test_max_in_flight_counts_requests_waiting_for_a_slot_and_never_holds_a_late_arrival():
    # one KV slot, a cap of 2: the second request waits for the slot inside the engine (in flight),
    # the third waits at the client; one due while only one is in flight is not held
    s = Scheduler(
        _reqs([(0.0, 2, 1), (0.0, 2, 1), (0.0, 2, 1), (2.5, 2, 1)]),
        _prompt,
        num_slots=1,
        max_batch=1,
        max_seq_len=8,
        max_in_flight=2,
    )
    s.release(0.0)
    assert len(s.waiting) == 2 and len(s.held) == 1 and len(s.pending) == 1 and s.capped()
    # a held request is recorded from its arrival
    assert len(s.records) == 3 and s.next_arrival() is None
    _drain(s, groups=1)
    recs = sorted(s.records, key=lambda r: r.request_id)
    assert [r.sent_s for r in recs] == [None, None, 1.0, None]
    assert [r.finish_s for r in recs] == [1.0, 2.0, 3.0, 4.0]
    assert _in_flight_max(recs) == 2


def test_replica_shares_of_a_cap_add_up_to_it():
    from harness.engines.reference.scheduler import replica_share

    assert [replica_share(7, 3, k) for k in range(3)] == [3, 2, 2]
    assert [replica_share(4, 2, k) for k in range(2)] == [2, 2]
    assert replica_share(None, 2, 0) is None


def test_the_scheduler_built_from_a_spec_honours_its_discipline_per_replica():
    """``for_replica`` is what the engine and the simulator both build: the replica's share of the
    trace (id mod dp), the spec's limits, its share of max_concurrency; a closed loop ignores the
    cap. ``for_warmup``: the replica's first requests, at once, under ids no trace uses."""
    from pathlib import Path

    from harness.engines.reference.scheduler import WARMUP_ID_BASE, for_replica, for_warmup
    from harness.plan.planner import token_budget
    from harness.spec.spec import load_spec
    from harness.spec.workload import build_trace

    cfg = Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml"
    spec = load_spec(
        cfg,
        [
            "parallel.dp=2",
            "cluster.gpus_per_node=16",
            "workload.max_concurrency=3",
            "run.prefill_chunk=8",
            "run.warmup_requests=2",
        ],
    )
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    s0, s1 = (for_replica(spec, trace, k, num_slots=5) for k in (0, 1))
    assert [r.request_id for r in s0.pending] == [r.request_id for r in trace.requests][::2]
    assert {r.request_id % 2 for r in s1.pending} == {1}
    assert (s0.max_in_flight, s1.max_in_flight) == (2, 1)  # 3 split over 2 replicas
    assert (s0.num_slots, s0.max_batch, s0.prefill_chunk) == (5, 8, 8)
    assert s0.token_budget == token_budget(spec) and not s0.closed and s0.replica == 0
    first = min(s1.pending, key=lambda r: r.request_id)
    assert s1.prompt_of(first) == trace.prompt_ids(first)
    closed = load_spec(cfg, ["workload.arrival=closed", "workload.concurrency=2"])
    sc = for_replica(closed, build_trace(closed.workload, 256, 128), 0, num_slots=5)
    assert sc.closed and sc.max_in_flight is None and len(sc.waiting) == 2
    warm = for_warmup(spec, trace, 1, num_slots=5)
    assert warm.warmup and warm.max_in_flight is None
    assert [r.request_id for r in warm.pending] == [WARMUP_ID_BASE, WARMUP_ID_BASE + 1]
    ones = [r for r in trace.requests if r.request_id % 2 == 1][:2]
    assert [(r.input_len, r.output_len, r.arrival_s) for r in warm.pending] == [
        (r.input_len, r.output_len, 0.0) for r in ones
    ]
