"""The coordinator's serving loop: keep up to ``groups`` micro-batches in the pipeline.

Runs on the first stage's TP rank 0 of each DP replica. Every other rank of the replica runs
``PipelineStage.serve_forever()`` and only follows what this loop submits.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch

from harness.engines.reference.parallel.pp import PipelineStage, StepMeta
from harness.engines.reference.scheduler import Batch, Scheduler

# in_flight: micro-batches in the pipeline when the coordinator stopped to wait for this step's
# tokens; available: sequences that could have joined another micro-batch at that moment (the
# loop only waits with work available when the pipeline is full); attn_pairs: the step's attention
# (query, key) pairs, Σ_rows n·start + n(n+1)/2 (harness.predict fits step cost on it; outside the
# steps schema, so runs written before it still read: rows_to_table keeps the extra column);
# t_schedule_s / t_build_s: when the coordinator began scheduling the step and building its inputs
# (the step's host-side parts, benchmarks/step_breakdown.py; extra columns as attn_pairs).
STEP_COLUMNS = (
    "replica",
    "step",
    "phase",
    "n_rows",
    "n_prefill_rows",
    "n_decode_rows",
    "n_tokens",
    "padded_tokens",
    "in_flight",
    "available",
    "t_submit_s",
    "t_done_s",
    "warmup",
    "attn_pairs",
    "t_schedule_s",
    "t_build_s",
)


def attn_pairs(batch: Batch) -> int:
    """(query, key) pairs the step's causal attention computes: Σ_rows n·start + n(n+1)/2."""
    return sum(
        len(r.tokens) * r.start_pos + len(r.tokens) * (len(r.tokens) + 1) // 2 for r in batch.rows
    )


def batch_step(batch: Batch) -> tuple[StepMeta, list[int]]:
    """The step's header fields and its packed token ids (rows in order, no padding), as host
    integers: ``PipelineStage.submit`` puts both on the device in one upload."""
    rows = batch.rows
    meta = StepMeta(
        step=batch.step,
        phase=batch.phase,
        slots=[r.slot for r in rows],
        start_pos=[r.start_pos for r in rows],
        n_tokens=[len(r.tokens) for r in rows],
    )
    return meta, [t for r in rows for t in r.tokens]


class ServeLoop:
    """Drive one scheduler to completion (or until ``should_stop()``) through the pipeline.

    ``clock`` and ``sleep`` are the loop's only view of time: ``harness.predict`` runs this same
    loop on a simulated clock, with a stage that advances it by fitted step costs."""

    def __init__(
        self,
        stage: PipelineStage,
        groups: int,
        device: torch.device,
        clock: Callable[[], float],
        replica: int,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_tick: Callable[[float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop_arrivals: Callable[[list, float], bool] | None = None,
    ):
        self.stage, self.groups, self.device = stage, groups, device
        self.clock, self.replica, self.sleep = clock, replica, sleep
        self.should_stop, self.on_tick = should_stop, on_tick
        # (records, now) -> True: no more arrivals, finish those in (slo.until_decided)
        self.stop_arrivals = stop_arrivals
        self.step_rows: list[tuple] = []
        self._stamps: dict[int, tuple[float, float]] = {}  # step -> (t_schedule, t_build)

    def run(self, sched: Scheduler, t0: float, warmup: bool = False) -> bool:
        """Returns True when every request finished, False when stopped early."""
        in_flight: deque[tuple[Batch, float]] = deque()
        comm_rec = self.stage.ctx.comm.rec
        while not sched.done():
            if self.should_stop():
                break
            now = self.clock() - t0
            if self.stop_arrivals is not None and not warmup and sched.pending:
                if self.stop_arrivals(sched.records, now):
                    sched.close_arrivals()
            sched.release(now)
            batch = (
                sched.schedule(now, self.groups - len(in_flight))
                if len(in_flight) < self.groups
                else None
            )
            if batch is not None:
                t_build = self.clock() - t0
                self._stamps[batch.step] = (now, t_build)
                meta, ids = batch_step(batch)
                comm_rec.step, comm_rec.phase = batch.step, batch.phase
                t_submit = self.clock() - t0
                tokens = self.stage.submit(meta, ids)
                if tokens is not None:  # pp == 1: the stage is also the last
                    self._finish(sched, batch, tokens, t_submit, t0, 1, sched.available(), warmup)
                else:
                    in_flight.append((batch, t_submit))
            if in_flight and (len(in_flight) >= self.groups or batch is None):
                self._collect(sched, in_flight, t0, warmup)
            elif batch is None and not in_flight:
                nxt = sched.next_arrival()
                wait = 0.001 if nxt is None else max(0.0, min(0.05, nxt - (self.clock() - t0)))
                self.sleep(wait)
            if self.on_tick is not None:
                self.on_tick(self.clock() - t0)
        while in_flight:  # stopped early: drain what is in the pipeline so the stages stay in step
            self._collect(sched, in_flight, t0, warmup)
        return sched.done()

    def _collect(self, sched: Scheduler, in_flight: deque, t0: float, warmup: bool) -> None:
        depth, available = len(in_flight), sched.available()
        batch, t_submit = in_flight.popleft()
        _, tokens = self.stage.collect()
        self._finish(sched, batch, tokens, t_submit, t0, depth, available, warmup)

    def _finish(
        self,
        sched: Scheduler,
        batch: Batch,
        tokens: torch.Tensor,
        t_submit: float,
        t0: float,
        depth: int,
        available: int,
        warmup: bool,
    ) -> None:
        # The tokens first, then the clock: reading them waits for the step on the device (on
        # CUDA ``submit`` returns when the step is queued), so ``now`` is when they exist.
        values = tokens.tolist()
        now = self.clock() - t0
        sched.complete(batch, values, now)
        n_pre = sum(r.is_prefill for r in batch.rows)
        self.step_rows.append(
            (
                self.replica,
                batch.step,
                batch.phase,
                len(batch.rows),
                n_pre,
                len(batch.rows) - n_pre,
                batch.n_tokens,
                batch.padded_tokens,
                depth,
                available,
                t_submit,
                now,
                warmup,
                attn_pairs(batch),
                *self._stamps.pop(batch.step, (None, None)),
            )
        )
