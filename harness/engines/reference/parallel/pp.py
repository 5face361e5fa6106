"""Pipeline stages: explicit point-to-point transfers between stages, all through ``Comm``.

Every transfer is a fixed-size int64 header followed by one payload:
- stage s -> s+1 (same TP rank): header + hidden ``[N, hidden]`` in the model dtype;
- last stage, TP rank 0 -> first stage, TP rank 0 (the coordinator): header + tokens ``[B]`` int64;
- on the first stage the coordinator broadcasts header + token ids ``[N]`` to its TP peers.

Tokens travel packed: N = Σ n_tokens, each row's tokens contiguous, no padding (``submit`` also
takes padded ``[B, T]`` ids and packs them).

Header (length ``4 + 3 * max_batch``): ``[step, B, N, flags, slots..., start_pos..., n_tokens...]``,
the three vectors padded to ``max_batch``; ``flags`` = stop bit | phase code << 1.

No host waits in a step (issue 28): the header is host integers (``StepMeta``), and travels on the
host groups (``Comm``: gloo twins of the TP group and edges on NCCL), so a receiver reads it without
waiting for a device stream; a step's rows reach the device in one upload (``upload``: pinned,
non-blocking), the coordinator's header and ids together; the index of the step is built from the
host integers (``BatchIndex(host=...)``). The coordinator's one read per step is its sampled tokens
(``collect``: on CUDA copied to pinned memory on a stream that waits for their receive only).
tests/test_step_syncs.py and tests/test_distributed.py count every such wait per step.

Stage timing (``timings``): four stamps per step from ``StageClock`` — on CUDA device events,
resolved later, so timing adds no host synchronize to a step.

Sends are ``isend``: the host never blocks on a send. That alone keeps a full pipeline moving on
gloo, not on NCCL, where a process group's sends and receives run in issue order on one stream:
every directed edge therefore has a process group of its own (``dist.make_groups``), so no stream
holds a send ahead of a receive in the other direction (tests/test_pipeline_streams.py replays
this order under NCCL's semantics for pp 2-4 and every micro-batch count up to pp). A send's
buffers stay referenced until it is waited; the oldest are waited once more than ``max_in_flight``
steps' sends are outstanding, which cannot block because the coordinator never has more than
``max_in_flight`` steps in flight (``submit`` refuses more), and every outstanding send belongs to
one of them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from harness.engines.reference.comm import COMM_COLUMNS
from harness.engines.reference.dist import DistContext
from harness.engines.reference.model.llama import StageModel
from harness.engines.reference.parallel.stage_clock import StageClock
from harness.engines.reference.parallel.tp import greedy_sample

PHASES = ("", "prefill", "decode", "mixed")
_STOP = 1
_STEP_COL, _PHASE_COL = COMM_COLUMNS.index("step"), COMM_COLUMNS.index("phase")


@dataclass
class StepMeta:
    """A step's header, as host integers: everything the host needs about the batch (the rows'
    slots, cached lengths and token counts) is known here without reading the device. A caller
    off the serving path may pass tensors; they are read once, here."""

    step: int
    slots: list[int]  # KV slot of each row
    start_pos: list[int]  # tokens already cached for that slot
    n_tokens: list[int]  # valid tokens in the row
    stop: bool = False
    phase: str = ""  # "" -> derived from the rows by step_phase()

    def __post_init__(self) -> None:
        for name in ("slots", "start_pos", "n_tokens"):
            v = getattr(self, name)
            if isinstance(v, torch.Tensor):
                setattr(self, name, v.tolist())

    @property
    def batch(self) -> int:
        return len(self.slots)


def step_phase(start_pos, n_tokens) -> str:
    """``decode`` if every row adds one token to a non-empty cache, ``prefill`` if none does,
    ``mixed`` otherwise (host integers)."""
    n = sum(1 for s, k in zip(start_pos, n_tokens) if k == 1 and s > 0)
    return "decode" if n == len(n_tokens) else "prefill" if n == 0 else "mixed"


def header_len(max_batch: int) -> int:
    return 4 + 3 * max_batch


def pack_ids(token_ids: torch.Tensor, n_tokens: list[int]) -> torch.Tensor:
    """Padded ``[B, T]`` ids -> packed ``[N]`` (row b's first ``n_tokens[b]``, rows in order); the
    kept positions come from the host integers, so the device is not read."""
    width = token_ids.shape[1]
    if all(n == width for n in n_tokens):
        return token_ids.reshape(-1)
    keep = [b * width + t for b, n in enumerate(n_tokens) for t in range(n)]
    at = torch.tensor(keep, dtype=torch.long)
    return token_ids.reshape(-1)[upload(at, token_ids.device)]


def header_values(meta: StepMeta, n_tok: int, max_batch: int) -> list[int]:
    """The header as host integers (module docstring): ``[step, B, N, flags, slots...,
    start_pos..., n_tokens...]``, each vector padded to ``max_batch``."""
    b = meta.batch
    if b > max_batch:
        raise ValueError(f"batch of {b} rows exceeds max_batch={max_batch}")
    phase = meta.phase or (step_phase(meta.start_pos, meta.n_tokens) if b else "")
    pad = [0] * (max_batch - b)
    flags = (_STOP if meta.stop else 0) | (PHASES.index(phase) << 1)
    return [meta.step, b, n_tok, flags, *meta.slots, *pad, *meta.start_pos, *pad] + [
        *meta.n_tokens,
        *pad,
    ]


def pack_header(meta: StepMeta, n_tok: int, max_batch: int, device=None) -> torch.Tensor:
    """The header tensor: on the host (it travels on the host groups, ``Comm``), or on
    ``device`` when one is named (emulate)."""
    hdr = torch.tensor(header_values(meta, n_tok, max_batch), dtype=torch.long)
    return hdr if device is None else hdr.to(device)


def unpack_header(hdr: torch.Tensor, max_batch: int) -> tuple[StepMeta, int]:
    """-> (meta, N packed tokens), from a host header: reading it waits for no device."""
    if hdr.device.type != "cpu":
        raise ValueError(f"a step header is read on the host; this one is on {hdr.device}")
    v = hdr.tolist()
    b = v[1]
    vec = [v[4 + k * max_batch : 4 + k * max_batch + b] for k in range(3)]
    return StepMeta(
        v[0], vec[0], vec[1], vec[2], stop=bool(v[3] & _STOP), phase=PHASES[v[3] >> 1]
    ), v[2]


def upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A step's host integers on the device: one copy, from pinned memory and non-blocking on
    CUDA (the host never waits for it; the caching host allocator keeps the pinned block until the
    copy has run); the tensor itself on CPU."""
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def device_rows(hdr: torch.Tensor, b: int, max_batch: int) -> tuple[torch.Tensor, ...]:
    """(slots, start_pos, n_tokens) ``[b]`` views of a header already on the device."""
    return tuple(hdr[4 + k * max_batch : 4 + k * max_batch + b] for k in range(3))


class PipelineStage:
    """One rank's part of a replica's pipeline. See the module docstring for the wire format."""

    def __init__(
        self,
        ctx: DistContext,
        model: StageModel,
        max_batch: int,
        max_tokens: int,
        max_in_flight: int = 64,
    ):
        self.ctx, self.model, self.comm = ctx, model, ctx.comm
        self.max_batch, self.max_tokens, self.max_in_flight = max_batch, max_tokens, max_in_flight
        layout, place = ctx.layout, ctx.place
        self.pp, self.stage = layout.pp, place.stage
        self.is_first, self.is_last = place.stage == 0, place.stage == layout.pp - 1
        self.is_coordinator = self.is_first and place.tp == 0
        self.coordinator_rank = layout.rank_of(place.dp, 0, 0)
        self.return_rank = layout.rank_of(place.dp, layout.pp - 1, 0)  # sends tokens back
        self.device = ctx.device
        self.dtype = next(model.parameters()).dtype
        self.hidden = model.shape.hidden
        self.clock = StageClock(self.device.type == "cuda")
        self.on_step = (
            None  # optional callable after each step this rank computes (profiler window)
        )
        self._in_flight: deque[int] = deque()  # coordinator: steps submitted, not collected
        self._sends: deque[tuple[list, tuple]] = deque()  # (ops, buffers kept alive)
        self.cuda = self.device.type == "cuda"
        # headers live on the host (pinned on CUDA): they travel on the host groups and are read
        # without waiting for any device stream (module docstring)
        self._hdr_host = torch.zeros(header_len(max_batch), dtype=torch.long, pin_memory=self.cuda)
        self._recv_buf = (
            None
            if self.is_first
            else torch.empty(max_tokens * self.hidden, dtype=self.dtype, device=self.device)
        )
        self._ids_buf = (
            torch.empty(max_tokens, dtype=torch.long, device=self.device) if self.is_first else None
        )
        self._tok_buf = torch.empty(max_batch, dtype=torch.long, device=self.device)
        # CUDA, coordinator: the returned tokens are copied to this pinned buffer on a stream of
        # their own that waits for the receive only, never behind the next step's compute
        self._tok_host = (
            torch.empty(max_batch, dtype=torch.long, pin_memory=True) if self.cuda else None
        )
        self._tok_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.graphs = None  # DecodeGraphs (parallel/graphs.py): decode replayed from CUDA graphs

    # ---- helpers -------------------------------------------------------------------------------
    def _set_rec(self, meta: StepMeta, phase: str | None = None) -> None:
        self.comm.rec.step = meta.step
        self.comm.rec.phase = phase or meta.phase or ("control" if meta.stop else "")

    def _header(self, receive, phase: str | None = None) -> tuple[StepMeta, int, torch.Tensor]:
        """Receive a header into the host buffer; label the trace with its step (its own row was
        recorded before the step was known, so it is relabelled too). Returns (meta, N tokens, a
        host copy of the header: it may travel on while the buffer takes the next)."""
        rows = self.comm.rec.rows
        n_rows = len(rows)
        hdr = receive(self._hdr_host).clone()
        meta, n_tok = unpack_header(hdr, self.max_batch)
        self._set_rec(meta, phase)
        if len(rows) > n_rows:
            rows[-1][_STEP_COL], rows[-1][_PHASE_COL] = self.comm.rec.step, self.comm.rec.phase
        return meta, n_tok, hdr

    def _isend(self, dst: int, hdr: torch.Tensor, *payload: torch.Tensor) -> None:
        """A step's header (host integers, on the edge's host group), then its payload."""
        tensors = tuple(t.contiguous() for t in (hdr, *payload))
        ops = [self.comm.isend(tensors[0], dst, "pp", host=True)]
        ops += [self.comm.isend(t, dst, "pp") for t in tensors[1:]]
        self._sends.append((ops, tensors))
        while len(self._sends) > self.max_in_flight:
            self._wait_oldest_send()

    def _wait_oldest_send(self) -> None:
        ops, _ = self._sends.popleft()
        for op in ops:
            op.wait()

    def _drain_sends(self) -> None:
        while self._sends:
            self._wait_oldest_send()

    @property
    def timings(self) -> list[dict]:
        """One row per step this rank computed (``StageClock``); resolving syncs the device once."""
        return self.clock.resolve()

    def _compute(self, meta: StepMeta, rows: tuple[torch.Tensor, ...], x: torch.Tensor):
        """The stage's forward on packed ``x``; ``rows``: (slots, start_pos, n_tokens) on the
        device, ``meta`` the same as host integers (the index is built from those: no read)."""
        if self.graphs is not None and self.graphs.applies(meta):
            out = self.graphs.run(meta, rows, x)
            if out is not None:
                return out
        # through the module's call, so its forward hooks see the step (tests capture logits so)
        return self.model(x, *rows, host=(meta.slots, meta.start_pos, meta.n_tokens))

    def _pass_on(self, meta: StepMeta, hdr: torch.Tensor, out: torch.Tensor) -> None:
        """After compute: hidden to the next stage, or (last stage) sample and return tokens."""
        if not self.is_last:
            self._isend(self.ctx.peer(self.stage + 1), hdr, out)
            return None
        self._set_rec(meta, "sample")
        tokens = greedy_sample(out, self.comm)
        if not self.is_first and self.ctx.place.tp == 0:
            self._isend(self.coordinator_rank, hdr, tokens)
        return tokens

    def _check_size(self, meta: StepMeta, n_tok: int) -> None:
        if meta.batch > self.max_batch or n_tok > self.max_tokens:
            raise ValueError(
                f"step {meta.step}: {meta.batch} rows, {n_tok} tokens exceed max_batch="
                f"{self.max_batch} / max_tokens={self.max_tokens}"
            )

    # ---- coordinator (first stage, TP rank 0) --------------------------------------------------
    def submit(self, meta: StepMeta, token_ids) -> torch.Tensor | None:
        """Run stage 0 on one micro-batch and send it on. ``token_ids``: the packed ids as host
        integers (the serving loop: header and ids go to the device in one upload), or a tensor
        (packed ``[N]`` or padded ``[B, T]``, e.g. tokens already on the device). pp == 1:
        returns the sampled tokens."""
        if not self.is_coordinator:
            raise RuntimeError("submit() runs on the first stage's TP rank 0 only")
        if len(self._in_flight) >= self.max_in_flight:
            raise RuntimeError(
                f"{len(self._in_flight)} steps already in flight (max_in_flight); collect() first"
            )
        t0 = self.clock.stamp()
        if not meta.phase:
            meta.phase = step_phase(meta.start_pos, meta.n_tokens)
        n_tok = sum(meta.n_tokens)
        self._check_size(meta, n_tok)
        self._set_rec(meta)
        head = header_values(meta, n_tok, self.max_batch)
        h = len(head)
        if isinstance(token_ids, torch.Tensor):
            hdr = torch.tensor(head, dtype=torch.long)
            dev = upload(hdr, self.device)
            ids = token_ids.to(self.device, torch.long, non_blocking=True)
            ids = (pack_ids(ids, meta.n_tokens) if ids.dim() == 2 else ids).contiguous()
        else:  # one upload: header and ids
            hdr = torch.tensor(head + list(token_ids), dtype=torch.long)
            dev = upload(hdr, self.device)
            hdr, ids = hdr[:h], dev[h:]
        if int(ids.shape[0]) != n_tok:
            raise ValueError(f"step {meta.step}: {ids.shape[0]} token ids for n_tokens={n_tok}")
        if self.comm.size("tp") > 1:
            self.comm.broadcast(hdr, self.coordinator_rank, "tp", host=True)
            self.comm.broadcast(ids, self.coordinator_rank, "tp")
        t1 = self.clock.stamp()
        out = self._compute(meta, device_rows(dev, meta.batch, self.max_batch), ids)
        t2 = self.clock.stamp()
        tokens = self._pass_on(meta, hdr, out)
        if tokens is None:
            self._in_flight.append(meta.step)
        self.clock.add(meta.step, [t0, t1, t2, self.clock.stamp()])
        if self.on_step is not None:
            self.on_step()
        return tokens

    def collect(self) -> tuple[StepMeta, torch.Tensor]:
        """Tokens of the oldest step in flight (steps return in submission order), on the host.
        Its two receives are traced under that step's number and phase (``comm.rec`` is left set
        to them). On CUDA the tokens are copied to pinned memory on a stream that waits for their
        receive only: reading them waits for the transfer, not for the steps queued since."""
        if not self._in_flight:
            raise RuntimeError("collect() with no step in flight")
        meta, _, _ = self._header(
            lambda buf: self.comm.recv(buf, self.return_rank, "pp", host=True), "sample"
        )
        expected = self._in_flight.popleft()
        if meta.step != expected:
            raise RuntimeError(f"pipeline returned step {meta.step}, expected {expected}")
        buf = self._tok_buf[: meta.batch]
        if not self.cuda:
            return meta, self.comm.recv(buf, self.return_rank, "pp").clone()
        with torch.cuda.stream(self._tok_stream):  # NCCL orders the receive after this stream
            op = self.comm.irecv(buf, self.return_rank, "pp")
            op.wait()  # this stream (only) waits for the transfer
            host = self._tok_host[: meta.batch].copy_(buf, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        done.synchronize()  # the step's one read: the sampled tokens
        return meta, host.clone()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stop(self) -> None:
        """Collect (and drop) any step still in flight, then send a stop header down the
        pipeline."""
        while self._in_flight:
            self.collect()
        meta = StepMeta(-1, [], [], [], stop=True)
        self._set_rec(meta)
        hdr = pack_header(meta, 0, self.max_batch)
        if self.comm.size("tp") > 1:
            self.comm.broadcast(hdr, self.coordinator_rank, "tp", host=True)
        if not self.is_last:
            self._isend(self.ctx.peer(1), hdr)
        self._drain_sends()

    # ---- every other rank ------------------------------------------------------------------------
    def _receive(self):
        """-> (meta, host header, device rows, input) of the next step; input is None for a
        stop. The header's integers are read on the host; its rows go to the device in one
        upload."""
        prev = None if self.is_first else self.ctx.peer(self.stage - 1)
        if self.is_first:
            meta, n, hdr = self._header(
                lambda buf: self.comm.broadcast(buf, self.coordinator_rank, "tp", host=True)
            )
        else:
            meta, n, hdr = self._header(lambda buf: self.comm.recv(buf, prev, "pp", host=True))
        if meta.stop:
            return meta, hdr, None, None
        self._check_size(meta, n)
        rows = device_rows(upload(hdr, self.device), meta.batch, self.max_batch)
        if self.is_first:
            x = self.comm.broadcast(self._ids_buf[:n], self.coordinator_rank, "tp")
        else:
            x = self.comm.recv(self._recv_buf[: n * self.hidden], prev, "pp").view(n, self.hidden)
        return meta, hdr, rows, x

    def serve_forever(self) -> int:
        """Follow the coordinator until a stop header arrives; returns the number of steps
        served."""
        if self.is_coordinator:
            raise RuntimeError("the coordinator drives the pipeline with submit()/collect()")
        served = 0
        while True:
            t0 = self.clock.stamp()
            meta, hdr, rows, x = self._receive()
            if x is None:
                if not self.is_last:
                    self._isend(self.ctx.peer(self.stage + 1), hdr)
                self._drain_sends()
                return served
            t1 = self.clock.stamp()
            out = self._compute(meta, rows, x)
            t2 = self.clock.stamp()
            self._pass_on(meta, hdr, out)
            self.clock.add(meta.step, [t0, t1, t2, self.clock.stamp()])
            if self.on_step is not None:
                self.on_step()
            served += 1
