"""Where the coordinator's arrivals come from: the trace's own schedule (``scheduler.for_replica``),
or MLPerf LoadGen (``harness run --loadgen server|offline``).

With LoadGen the measured phase's scheduler is a :class:`LoadGenScheduler`: LoadGen's test runs in
a thread of its own (``harness.engines.loadgen.bridge``), its issue callback puts each query on a
thread-safe queue, and the serving loop's ``release(now)`` drains that queue into the scheduler's
arrivals (request id = the query's issue order, its prompt and lengths those of the trace request
LoadGen picked, its arrival the issue time). Everything else is the trace scheduler's: admission,
batching, chunked prefill, the records. When a request's first token and its last are sampled,
LoadGen hears of them (``FirstTokenComplete``, ``QuerySamplesComplete`` with its token count). The
scheduler is done when LoadGen's test has returned (every query it issued answered, its logs
written); then each arrival is moved back by LoadGen's issue delay to its scheduled time, where
LoadGen's own latencies start.

One coordinator serves every query, so a LoadGen run has one DP replica (checked before launch).
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from harness.engines.loadgen.bridge import LoadGenTest
from harness.engines.loadgen.judged import loadgen_block
from harness.engines.loadgen.settings import LoadGenOptions
from harness.engines.reference.scheduler import Batch, Scheduler, for_replica
from harness.plan.planner import seq_len
from harness.spec.workload import Request, Trace


class LoadGenScheduler(Scheduler):
    """The trace scheduler with LoadGen as its arrival source (open loop, no cap)."""

    def __init__(self, test: LoadGenTest, trace: Trace, **limits):
        super().__init__([], trace.prompt_ids, **limits)
        self.test, self.trace = test, trace
        self.issued: queue.SimpleQueue = queue.SimpleQueue()
        self.qid: dict[int, int] = {}  # request id (issue order) -> LoadGen's query id
        self._t0: float | None = None
        self._settled = False

    def release(self, now: float) -> None:
        if self._t0 is None:  # the serving loop's first look: LoadGen's test starts now
            self._t0 = time.monotonic() - now
            self.test.start(lambda qid, seq, index, t: self.issued.put((qid, seq, index, t)))
        while True:
            try:
                qid, seq, index, t = self.issued.get_nowait()
            except queue.Empty:
                break
            src = self.trace.requests[index]
            req = Request(
                seq, t - self._t0, src.input_len, src.output_len, self.trace.prompt_ids(src)
            )
            self.qid[seq] = qid
            self.pending.append(req)
        super().release(now)

    def next_arrival(self) -> float | None:
        return None  # LoadGen decides: the loop polls release()

    def done(self) -> bool:
        if not (super().done() and self.issued.empty() and self.test.finished):
            return False
        if not self._settled:
            self._settled = True
            delays = self.test.issue_delays()
            for rec in self.records:
                rec.arrival_s -= delays.get(rec.request_id, 0.0)
        return True

    def complete(self, batch: Batch, tokens: list[int], now: float) -> int:
        recs = {s.req.request_id: s.record for s in self.running}  # before finished ones leave
        for row, tok in zip(batch.rows, tokens):  # first tokens told before the bookkeeping
            rec = recs.get(row.request_id)
            if row.ends_prefill and rec is not None and not rec.token_times_s:
                self.test.first_token(self.qid[row.request_id], int(tok))
        finished = super().complete(batch, tokens, now)
        for row, tok in zip(batch.rows, tokens):
            rec = recs.get(row.request_id)
            if not row.ends_prefill or rec is None:
                continue
            qid = self.qid[row.request_id]
            if rec.completed:
                out = self.outputs[row.request_id]
                self.test.complete(qid, out, len(out))
        return finished

    def stop(self) -> None:
        """A stopped run: LoadGen's open queries answered so its thread ends and logs are kept."""
        if self._t0 is not None:
            self.test.abort()


def measured_scheduler(
    spec,
    trace: Trace,
    replica: int,
    num_slots: int,
    first_step: int,
    loadgen: LoadGenOptions | None,
    run_dir: Path | None,
) -> Scheduler:
    """The measured phase's scheduler: the trace's schedule, or LoadGen's (its logs in
    ``run_dir``)."""
    base = for_replica(spec, trace, replica, num_slots, first_step=first_step)
    if loadgen is None:
        return base
    test = LoadGenTest(loadgen, len(trace.requests), Path(run_dir))
    return LoadGenScheduler(
        test,
        trace,
        num_slots=base.num_slots,
        max_batch=base.max_batch,
        max_seq_len=seq_len(spec),
        prefill_chunk=base.prefill_chunk,
        token_budget=base.token_budget,
        first_step=first_step,
    )


def loadgen_extra(sched: Scheduler | None, loadgen: LoadGenOptions | None, run_dir) -> dict:
    """The summary's ``loadgen`` block of a LoadGen-driven run (else nothing); a stopped run's
    open queries are answered first, so LoadGen ends and leaves its logs."""
    if loadgen is None or not isinstance(sched, LoadGenScheduler):
        return {}
    if not sched.done():
        sched.stop()
    block = loadgen_block(loadgen, Path(run_dir), sched.records, sched.test.issued)
    return {"loadgen": block}
