"""Continuous batching for one DP replica: which sequences run in the next micro-batch.

Pure (no torch): the pipeline loop asks ``schedule(group, now)`` for an idle micro-batch group
and hands back the sampled tokens with ``complete(batch, tokens, now)``.

- ``groups`` micro-batch groups (= micro-batches in flight, default pp) each own a set of running
  sequences, so that while group g's step is in the pipeline the others can be too (as vLLM's
  virtual engines for PP). A sequence stays in the group that admitted it.
- A request waits (queueing delay) until it has arrived AND a KV slot is free (admission
  control). Newly admitted requests are spread across groups: a group takes at most
  ceil(active / groups) sequences, so that enough waiting requests fill every group.
- A prefill row carries the prompt (or a chunk of ``prefill_chunk`` tokens); its sampled token
  is the first output token only when the chunk ends the prompt. A decode row carries the last
  generated token. A request ends at its target output length (EOS ignored, as benchmarks do).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from harness.metrics import RequestRecord
from harness.workload import Request


@dataclass
class Row:
    request_id: int
    slot: int
    start_pos: int          # tokens already in the slot's cache
    tokens: list[int]
    ends_prefill: bool      # the sampled token of this row is an output token
    is_prefill: bool


@dataclass
class Batch:
    step: int
    group: int
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
        return len(self.rows) * max(len(r.tokens) for r in self.rows)


@dataclass
class _Seq:
    req: Request
    prompt: list[int]
    record: RequestRecord
    slot: int = -1
    group: int = -1
    prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    in_flight: bool = False


class Scheduler:
    def __init__(self, requests: list[Request], prompt_of: Callable[[Request], list[int]], *,
                 num_slots: int, max_batch: int, groups: int, max_seq_len: int,
                 prefill_chunk: int | None = None, closed_loop_concurrency: int | None = None,
                 replica: int = 0, warmup: bool = False, first_step: int = 0):
        if num_slots < 1 or max_batch < 1 or groups < 1:
            raise ValueError("num_slots, max_batch and groups must be >= 1")
        for r in requests:
            if r.input_len + r.output_len - 1 > max_seq_len:
                raise ValueError(f"request {r.request_id}: {r.input_len}+{r.output_len} tokens exceed the KV slot "
                                 f"length {max_seq_len}")
        self.prompt_of = prompt_of
        self.num_slots, self.max_batch, self.groups = num_slots, max_batch, groups
        self.prefill_chunk = prefill_chunk
        self.replica, self.warmup = replica, warmup
        self.closed = closed_loop_concurrency is not None
        self.pending: deque[Request] = deque(sorted(requests, key=lambda r: (r.arrival_s, r.request_id)))
        self.waiting: deque[_Seq] = deque()
        self.running: list[list[_Seq]] = [[] for _ in range(groups)]
        self.free_slots: list[int] = list(range(num_slots - 1, -1, -1))
        self.records: list[RequestRecord] = []
        self.outputs: dict[int, list[int]] = {}
        self.step = first_step   # step ids are unique across warm-up and measured phases
        self._released_closed = 0
        if self.closed:
            for _ in range(min(closed_loop_concurrency, len(self.pending))):
                self._release_closed(0.0)

    # ------------------------------------------------------------ arrivals
    def _make_seq(self, req: Request, arrival: float) -> _Seq:
        rec = RequestRecord(request_id=req.request_id, replica=self.replica, arrival_s=arrival, admitted_s=None,
                            first_token_s=None, input_len=req.input_len, output_len=req.output_len,
                            warmup=self.warmup)
        self.records.append(rec)
        return _Seq(req, self.prompt_of(req), rec)

    def _release_closed(self, now: float) -> None:
        if self.pending:
            self.waiting.append(self._make_seq(self.pending.popleft(), now))

    def release(self, now: float) -> None:
        """Open loop: every request whose scheduled arrival has passed joins the waiting queue."""
        if self.closed:
            return
        while self.pending and self.pending[0].arrival_s <= now:
            req = self.pending.popleft()
            self.waiting.append(self._make_seq(req, req.arrival_s))

    def next_arrival(self) -> float | None:
        if self.closed or not self.pending:
            return None
        return self.pending[0].arrival_s

    # ------------------------------------------------------------ state
    def active(self) -> int:
        return sum(len(g) for g in self.running)

    def done(self) -> bool:
        return not self.pending and not self.waiting and self.active() == 0

    def has_work(self, group: int) -> bool:
        g = self.running[group]
        if any(s.in_flight for s in g):
            return False
        return bool(g) or bool(self.waiting and self.free_slots)

    # ------------------------------------------------------------ scheduling
    def schedule(self, group: int, now: float) -> Batch | None:
        """The next micro-batch of ``group`` (idle), admitting waiting requests into free slots."""
        seqs = self.running[group]
        if any(s.in_flight for s in seqs):
            return None
        share = math.ceil((self.active() + len(self.waiting)) / self.groups)
        room = min(self.max_batch, max(share, 1)) - len(seqs)
        while room > 0 and self.waiting and self.free_slots:
            s = self.waiting.popleft()
            s.slot, s.group = self.free_slots.pop(), group
            s.record.admitted_s = now
            seqs.append(s)
            room -= 1
        if not seqs:
            return None
        rows = []
        for s in seqs:
            s.in_flight = True
            if s.prefilled < s.req.input_len:
                n = s.req.input_len - s.prefilled
                if self.prefill_chunk:
                    n = min(n, self.prefill_chunk)
                toks = s.prompt[s.prefilled:s.prefilled + n]
                rows.append(Row(s.req.request_id, s.slot, s.prefilled, toks,
                                s.prefilled + n == s.req.input_len, True))
            else:
                pos = s.req.input_len + len(s.generated) - 1
                rows.append(Row(s.req.request_id, s.slot, pos, [s.generated[-1]], True, False))
        batch = Batch(self.step, group, rows)
        self.step += 1
        return batch

    def complete(self, batch: Batch, tokens: list[int], now: float) -> int:
        """Apply one step's sampled tokens; returns how many requests finished."""
        seqs = {s.req.request_id: s for s in self.running[batch.group]}
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
                self.running[batch.group].remove(s)
                self.free_slots.append(s.slot)
                finished += 1
                if self.closed:
                    self._release_closed(now)
        return finished
