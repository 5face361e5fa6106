"""Continuous batching for one DP replica: which sequences run in the next micro-batch.

Pure (no torch): the pipeline loop asks ``schedule(now, free)`` for the next micro-batch while
fewer than ``groups`` are in flight, and hands back the sampled tokens with
``complete(batch, tokens, now)``.

- Up to ``groups`` micro-batches (default pp) are in the pipeline at once, so that every stage
  works while the others do. A sequence is in at most one of them (its next token needs the
  previous one); any sequence not in flight may join the next micro-batch — the KV cache is
  indexed by slot on every stage, so no sequence is tied to a micro-batch.
- A request waits (queueing delay) until it has arrived AND a KV slot is free (admission
  control). With ``free`` micro-batches to fill and ``n`` sequences available (idle running +
  admissible waiting), a micro-batch takes ceil(n / free) of them (at most ``max_batch``), so
  enough available sequences always fill every micro-batch.
- Chunked prefill under a token budget (``token_budget``, vLLM's ``max_num_batched_tokens``): a
  micro-batch carries at most that many tokens. Decode rows come first (one token each, they
  always fit: the budget is >= max_batch); prefill rows — prompts under way first, then newly
  admitted ones — take chunks of what is left, so a long prompt never holds decoding rows back
  by more than the budget. ``prefill_chunk`` caps any one row's chunk as well; with neither, a
  prompt is prefilled whole.
- A prefill row's sampled token is the first output token only when its chunk ends the prompt.
  A decode row carries the last generated token. A request ends at its target output length
  (EOS ignored, as benchmarks do).
- ``max_in_flight`` (vLLM's ``--max-concurrency`` with a rate, ``workload.max_concurrency``; this
  replica's share): arrivals keep their schedule (and their records from then on), but one due
  while that many are in flight (released, not finished: waiting for a slot or running) is held at
  the client and released when one finishes, at that finish's time (its record's ``sent_s``), in
  arrival order (vLLM's asyncio semaphore is FIFO). TTFT stays measured from the scheduled arrival
  (``harness.measure.metrics``); vLLM's is from the send.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from harness.measure.metrics import RequestRecord
from harness.plan.planner import seq_len, token_budget
from harness.spec.workload import Request, Trace


def replica_share(cap: int | None, dp: int, replica: int) -> int | None:
    """Replica ``replica``'s part of a cap of ``cap`` requests in flight over ``dp`` replicas: the
    replicas serve fixed shares of the trace (request id mod dp) and coordinate nothing, so the cap
    is split, cap // dp each and one more for the first cap % dp (together exactly ``cap``)."""
    if cap is None:
        return None
    return cap // dp + (1 if replica < cap % dp else 0)


@dataclass
class Row:
    request_id: int
    slot: int
    start_pos: int  # tokens already in the slot's cache
    tokens: list[int]
    ends_prefill: bool  # the sampled token of this row is an output token
    is_prefill: bool


@dataclass
class Batch:
    step: int
    rows: list[Row]

    @property
    def phase(self) -> str:
        kinds = {r.is_prefill for r in self.rows}
        return "mixed" if len(kinds) == 2 else ("prefill" if True in kinds else "decode")

    @property
    def n_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)

    @property
    def padded_tokens(self) -> int:
        """Tokens the forward computes: the batch runs packed, so no padding (== n_tokens)."""
        return self.n_tokens


@dataclass
class _Seq:
    req: Request
    prompt: list[int]
    record: RequestRecord
    slot: int = -1
    prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    in_flight: bool = False


class Scheduler:
    def __init__(
        self,
        requests: list[Request],
        prompt_of: Callable[[Request], list[int]],
        *,
        num_slots: int,
        max_batch: int,
        max_seq_len: int,
        prefill_chunk: int | None = None,
        token_budget: int | None = None,
        closed_loop_concurrency: int | None = None,
        max_in_flight: int | None = None,
        replica: int = 0,
        warmup: bool = False,
        first_step: int = 0,
    ):
        if num_slots < 1 or max_batch < 1:
            raise ValueError("num_slots and max_batch must be >= 1")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if token_budget is not None and token_budget < max_batch:
            raise ValueError(
                f"token_budget {token_budget} < max_batch {max_batch}: every decode row must fit"
            )
        for r in requests:
            if r.input_len + r.output_len - 1 > max_seq_len:
                raise ValueError(
                    f"request {r.request_id}: {r.input_len}+{r.output_len} tokens exceed the KV "
                    f"slot "
                    f"length {max_seq_len}"
                )
        self.prompt_of = prompt_of
        self.num_slots, self.max_batch = num_slots, max_batch
        self.prefill_chunk, self.token_budget = prefill_chunk, token_budget
        self.replica, self.warmup = replica, warmup
        self.closed = closed_loop_concurrency is not None
        self.max_in_flight = None if self.closed else max_in_flight
        self._capped_since: float | None = None  # when the cap began to bind (continuously since)
        self.pending: deque[Request] = deque(
            sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
        )
        self.waiting: deque[_Seq] = deque()
        self.held: deque[_Seq] = deque()  # arrived, held at the client by max_in_flight
        self.running: list[_Seq] = []  # admitted, in admission order
        self.free_slots: list[int] = list(range(num_slots - 1, -1, -1))
        self.records: list[RequestRecord] = []
        self.outputs: dict[int, list[int]] = {}
        self.step = first_step  # step ids are unique across warm-up and measured phases
        self._released_closed = 0
        if self.closed:
            for _ in range(min(closed_loop_concurrency, len(self.pending))):
                self._release_closed(0.0)

    # ------------------------------------------------------------ arrivals
    def _make_seq(self, req: Request, arrival: float) -> _Seq:
        rec = RequestRecord(
            request_id=req.request_id,
            replica=self.replica,
            arrival_s=arrival,
            admitted_s=None,
            first_token_s=None,
            input_len=req.input_len,
            output_len=req.output_len,
            warmup=self.warmup,
        )
        self.records.append(rec)
        return _Seq(req, self.prompt_of(req), rec)

    def _release_closed(self, now: float) -> None:
        if self.pending:
            self.waiting.append(self._make_seq(self.pending.popleft(), now))

    def release(self, now: float) -> None:
        """Open loop: every request whose scheduled arrival has passed joins the waiting queue
        (under
        ``max_in_flight``: while fewer than that are in flight; the others are held, recorded)."""
        if not self.closed:
            self._advance(now)

    def in_flight(self) -> int:
        """Requests released and not finished (waiting for a KV slot, or running)."""
        return len(self.waiting) + len(self.running)

    def capped(self) -> bool:
        """True while the ``max_in_flight`` cap holds arrivals back."""
        return self.max_in_flight is not None and self.in_flight() >= self.max_in_flight

    def _advance(self, now: float) -> None:
        """Arrivals due by ``now`` join the held queue; held requests go while the cap allows. One
        due since the cap began to bind was held: sent at ``now`` (a finish). One due before that
        was only late in the loop: it keeps its arrival, as without a cap."""
        while self.pending and self.pending[0].arrival_s <= now:
            req = self.pending.popleft()
            self.held.append(self._make_seq(req, req.arrival_s))
        while self.held and not self.capped():
            seq = self.held.popleft()
            rec = seq.record
            if (
                self._capped_since is not None
                and rec.arrival_s >= self._capped_since
                and now > rec.arrival_s
            ):
                rec.sent_s = now
            self.waiting.append(seq)
            if self.capped() and self._capped_since is None:
                self._capped_since = rec.arrival_s if rec.sent_s is None else rec.sent_s
        if not self.capped():
            self._capped_since = None

    def close_arrivals(self) -> None:
        """No request not yet arrived will (a run stopped once decided); those in are served."""
        self.pending.clear()

    def next_arrival(self) -> float | None:
        if self.closed or not self.pending or self.capped():
            return None  # closed, drained, or the next release waits for a finish
        return self.pending[0].arrival_s

    # ------------------------------------------------------------ state
    def active(self) -> int:
        return len(self.running)

    def done(self) -> bool:
        return not self.pending and not self.held and not self.waiting and not self.running

    def available(self) -> int:
        """Sequences that could join a micro-batch now: idle running ones + admissible waiting
        ones."""
        idle = sum(not s.in_flight for s in self.running)
        return idle + min(len(self.waiting), len(self.free_slots))

    # ------------------------------------------------------------ scheduling
    def schedule(self, now: float, free: int = 1) -> Batch | None:
        """The next micro-batch, when ``free`` micro-batches may still enter the pipeline."""
        n = self.available()
        if n == 0:
            return None
        take = min(self.max_batch, math.ceil(n / max(free, 1)))
        budget = self.token_budget or math.inf
        idle = [s for s in self.running if not s.in_flight]
        rows = []
        for s in [s for s in idle if s.prefilled >= s.req.input_len][:take]:  # decode rows first
            pos = s.req.input_len + len(s.generated) - 1
            rows.append(
                self._take(s, Row(s.req.request_id, s.slot, pos, [s.generated[-1]], True, False))
            )
        budget -= len(rows)
        prefilling = iter([s for s in idle if s.prefilled < s.req.input_len])
        while len(rows) < take and budget >= 1:
            s = next(prefilling, None)
            if s is None:
                if not (self.waiting and self.free_slots):
                    break
                s = self.waiting.popleft()
                s.slot = self.free_slots.pop()
                s.record.admitted_s = now
                self.running.append(s)
            k = min(s.req.input_len - s.prefilled, self.prefill_chunk or math.inf, budget)
            toks = s.prompt[s.prefilled : s.prefilled + k]
            rows.append(
                self._take(
                    s,
                    Row(
                        s.req.request_id,
                        s.slot,
                        s.prefilled,
                        toks,
                        s.prefilled + k == s.req.input_len,
                        True,
                    ),
                )
            )
            budget -= k
        batch = Batch(self.step, rows)
        self.step += 1
        return batch

    @staticmethod
    def _take(s: _Seq, row: Row) -> Row:
        s.in_flight = True
        return row

    def complete(self, batch: Batch, tokens: list[int], now: float) -> int:
        """Apply one step's sampled tokens; returns how many requests finished."""
        seqs = {s.req.request_id: s for s in self.running}
        finished = 0
        for row, tok in zip(batch.rows, tokens):
            s = seqs[row.request_id]
            s.in_flight = False
            if row.is_prefill:
                s.prefilled += len(row.tokens)
            if not row.ends_prefill:
                continue
            s.generated.append(int(tok))
            s.record.token_times_s.append(now)
            if len(s.generated) == 1:
                s.record.first_token_s = now
            if len(s.generated) >= s.req.output_len:
                s.record.finish_s = now
                s.record.completed = True
                self.outputs[s.req.request_id] = s.generated
                self.running.remove(s)
                self.free_slots.append(s.slot)
                finished += 1
                if self.closed:
                    self._release_closed(now)
                elif self.max_in_flight is not None:
                    self._advance(now)
        return finished


# ---------------------------------------------------------------- built from a spec
# The engine's coordinator and the simulator (harness.predict.simulate) both build their
# schedulers here, so a spec field the scheduler honours reaches both (the simulator's own copy
# once dropped workload.max_concurrency).

WARMUP_ID_BASE = 1_000_000_000  # warm-up requests get ids no trace uses (and their own prompts)


def replica_requests(trace: Trace, dp: int, replica: int) -> list[Request]:
    """DP replica ``replica``'s fixed share of the trace: request id mod dp."""
    return [r for r in trace.requests if r.request_id % dp == replica]


def _limits(spec, num_slots: int) -> dict:
    return {
        "num_slots": num_slots,
        "max_batch": spec.run.max_batch,
        "max_seq_len": seq_len(spec),
        "prefill_chunk": spec.run.prefill_chunk,
        "token_budget": token_budget(spec),
    }


def for_replica(
    spec,
    trace: Trace,
    replica: int,
    num_slots: int,
    prompt_of: Callable[[Request], list[int]] | None = None,
    first_step: int = 0,
) -> Scheduler:
    """The measured phase's scheduler of DP replica ``replica``: its share of ``trace``, the
    spec's batch, slot length, chunk and token budget, the trace's arrival discipline (a closed
    loop's concurrency, or this replica's share of ``max_concurrency``); ``prompt_of``: the
    trace's prompts unless given (the simulator needs only their lengths)."""
    return Scheduler(
        replica_requests(trace, spec.layout.dp, replica),
        prompt_of or trace.prompt_ids,
        **_limits(spec, num_slots),
        closed_loop_concurrency=trace.concurrency if trace.closed_loop else None,
        max_in_flight=replica_share(trace.max_concurrency, spec.layout.dp, replica),
        replica=replica,
        first_step=first_step,
    )


def for_warmup(spec, trace: Trace, replica: int, num_slots: int) -> Scheduler:
    """The warm-up's scheduler: ``run.warmup_requests`` requests shaped like the replica's first
    ones, all arriving at once, with ids no trace uses and no arrival discipline."""
    base = replica_requests(trace, spec.layout.dp, replica)[: spec.run.warmup_requests]
    warm = [
        Request(WARMUP_ID_BASE + i, 0.0, r.input_len, r.output_len, None)
        for i, r in enumerate(base)
    ]
    return Scheduler(
        warm, trace.prompt_ids, **_limits(spec, num_slots), replica=replica, warmup=True
    )
