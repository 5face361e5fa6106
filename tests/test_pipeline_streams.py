"""The pipeline's send/recv order under NCCL's stream semantics (issue 26, finding 4): one stream
per rank and communicator, ops in issue order, a send completing with its receive. The order is
recorded from the real PipelineStage/ServeLoop/Scheduler of every rank (tests/nccl_streams.py);
the model then replays it."""

from __future__ import annotations

import pytest

from nccl_streams import as_issued, one_stream_per_rank, record_pipeline, replay


def _cases(pp):
    return [(pp, m) for m in range(1, pp + 1)]


@pytest.mark.parametrize("pp", [2, 3, 4])
def test_pipeline_send_recv_order_cannot_wait_in_a_cycle(pp):
    """With the process groups ``dist.make_groups`` builds (one per directed pipeline edge), every
    op of every rank completes, for every micro-batch count up to pp; each communicator carries one
    direction of one edge, and nothing point-to-point rides the default group."""
    for _, m in _cases(pp):
        trace = record_pipeline(pp, m)
        assert replay(trace, as_issued) is None, (pp, m)
        sends = [op for ops in trace.values() for op in ops if op.kind == "send"]
        directions = {}
        for op in sends:
            directions.setdefault(op.channel, set()).add((op.rank, op.peer))
        assert "default" not in directions
        assert all(len(d) == 1 for d in directions.values())
        assert len(directions) == pp  # pp − 1 forward edges and the way back
        # the run served every micro-batch: 2m requests × 3 tokens, each step one hop per edge
        steps = {op.step for op in sends if op.rank == 0 and op.step >= 0}
        assert len(steps) == 2 * m * 3


def test_tensor_parallel_pipeline_cannot_wait_in_a_cycle():
    """TP2-PP2 with both micro-batches in flight: the TP broadcasts and the sampling all-gather on
    their own groups beside the edge groups; still no cycle."""
    assert replay(record_pipeline(2, 2, tp=2), as_issued) is None


def test_one_stream_per_rank_could_wait_in_a_cycle():
    """The same issue order with every send and receive on one communicator per rank (the eager-
    init default group the pipeline used before): as soon as every stage has a micro-batch (m =
    pp), each rank's next send sits ahead of the receive its successor's send is waiting for,
    all round the ring: rank 0's send of step pp−1 waits for rank 1, whose send of step pp−2 waits
    for rank 2, ..., whose send of step 0 (the tokens back) waits for rank 0."""
    stuck = {
        (pp, m): replay(record_pipeline(pp, m), one_stream_per_rank)
        for pp in (2, 3, 4)
        for _, m in _cases(pp)
    }
    assert {k for k, v in stuck.items() if v} == {(2, 2), (3, 3), (4, 4)}
    assert stuck[(3, 3)] == [
        "rank 0 send to 1 (step 2) on default",
        "rank 1 send to 2 (step 1) on default",
        "rank 2 send to 0 (step 0) on default",
    ]
