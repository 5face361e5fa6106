"""Every collective and point-to-point op of a run goes through ``Comm``, so the trace sees all of
them.

Why an explicit layer rather than patching ``torch.distributed``: wrapping the library functions
misses functional collectives, a ``TorchDispatchMode`` sees everything but costs 15-40 % of a CPU
decode step, and wrapping ``isend``/``irecv`` breaks ``P2POp``. The runtime issues only
hand-written collectives (Megatron style), all from here; tests prove no op bypasses it by
counting the ``torch.distributed`` calls of a run against this trace.

Recording levels: ``off`` (nothing), ``counts`` (op, group, peer, dtype, elements, bytes),
``timing`` (plus start/end). On CUDA, timing uses events that are resolved in ``flush()`` at the
end of a window: no device sync per op in the hot path. On CPU it is the wall clock.

CUDA events of an op: the start is recorded on the current (compute) stream before the op is
issued (NCCL's stream waits for that point before it starts the op); a blocking op's end is
recorded on the current stream after it (which waited for the op); an async op's (``isend``/
``irecv``) end is recorded on a timing stream of its own that first waits for the op
(``work.wait()`` under that stream), so it fires when the transfer has completed, not when it was
queued, and neither the host nor the compute stream waits for it.

Point-to-point ops go on the process group of their directed pair (``p2p[(src, dst)]``, built by
``dist.init``: one per pipeline edge and direction), never on the default group: with NCCL each
process group is one communicator and one stream, whose ops run in issue order (in eager-init mode
torch serialises every unbatched send/recv of a group with its other ops), so a pipeline whose
forward sends and returned tokens shared one stream could wait in a cycle (tests/
test_pipeline_streams.py). Without an entry (one process, tests) the default group carries it.

Host groups (``host=True``): a step's header is host integers, and on CUDA it travels on gloo twins
of the TP group and of each pipeline edge (``host_groups``, ``host_p2p``, built by ``dist.init``),
so a receiver reads it without waiting for any device stream, as vLLM sends its metadata on a CPU
group beside the device group. On CPU the host groups are the groups themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

COMM_COLUMNS = (
    "rank",
    "step",
    "phase",
    "op",
    "group",
    "group_size",
    "peer",
    "dtype",
    "numel",
    "bytes",
    "t_start_s",
    "t_end_s",
)


@dataclass
class CommRecorder:
    """Collects one row per op issued by this rank (see COMM_COLUMNS)."""

    rank: int
    level: str = "timing"  # off | counts | timing
    cuda: bool = False
    step: int = -1  # set by the engine: which micro-batch step issued the op
    phase: str = ""  # set by the engine: prefill | decode | mixed | sample | control
    rows: list = field(default_factory=list)
    _pending: list = field(default_factory=list)  # (row index, start event, end event) on CUDA
    _t0: float = field(default_factory=time.monotonic)
    _base: object = None  # CUDA: an event recorded at a known monotonic time (_base_s)
    _base_s: float = 0.0
    _streams: dict = field(default_factory=dict)  # CUDA: (op, peer) -> timing stream of async ops

    RESOLVE_EVERY = 1024  # CUDA: try to resolve finished events after this many pending ops

    def begin(self, host: bool = False):
        """The op's start: a CUDA event, or the wall clock (CPU, and host-group ops on CUDA,
        which no stream runs)."""
        if self.level != "timing":
            return None
        if self.cuda and not host:
            if self._base is None:
                self._set_base()
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.monotonic()

    def _set_base(self) -> None:
        """One sync, at the first timed op: ties event times to the monotonic clock the stage
        timings use, so comm rows and stage rows share one time axis."""
        torch.cuda.synchronize()
        self._base = torch.cuda.Event(enable_timing=True)
        self._base.record()
        torch.cuda.synchronize()
        self._base_s = time.monotonic() - self._t0

    def end(
        self, token, op: str, group: str, group_size: int, peer: int, t: torch.Tensor, work=None
    ) -> int:
        """Close the row of an op just issued; ``work``: the async op's handle (its end is when
        it completes, see the module docstring), None for a blocking op."""
        if self.level == "off":
            return -1
        n = t.numel()
        row = [
            self.rank,
            self.step,
            self.phase,
            op,
            group,
            group_size,
            peer,
            str(t.dtype).replace("torch.", ""),
            n,
            n * t.element_size(),
            None,
            None,
        ]
        if token is not None:
            if not isinstance(token, float):
                ev = self._end_event(op, peer, work)
                self._pending.append((len(self.rows), token, ev))
                if len(self._pending) >= self.RESOLVE_EVERY:
                    self.flush(block=False)
            else:
                row[10] = token - self._t0
                row[11] = time.monotonic() - self._t0
        self.rows.append(row)
        return len(self.rows) - 1

    def _end_event(self, op: str, peer: int, work):
        ev = torch.cuda.Event(enable_timing=True)
        if work is None:
            ev.record()
            return ev
        # One timing stream per (op, peer): ops on one communicator complete in issue order, so
        # a stream never holds an end behind an op that finishes later.
        stream = self._streams.get((op, peer))
        if stream is None:
            stream = self._streams[(op, peer)] = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            work.wait()  # this stream (only) waits for the transfer
            ev.record()
        return ev

    def stamp_end(self, index: int, host: bool = False) -> None:
        """For async ops on CPU (and host-group ops): the end is when ``wait()`` returned (wall
        clock; on CUDA a device op's end event was placed when the op was issued)."""
        if index >= 0 and self.level == "timing" and (host or not self.cuda):
            self.rows[index][11] = time.monotonic() - self._t0

    def flush(self, block: bool = True) -> None:
        """Resolve CUDA event times. ``block``: one device sync for everything pending (end of a
        window); otherwise only the oldest ops whose end event has completed, with no sync, so
        the hot path never waits and pending events stay bounded."""
        if not self._pending:
            return
        if block:
            torch.cuda.synchronize()
        done = 0
        for index, start, end in self._pending:
            if not block and not end.query():
                break
            self.rows[index][10] = self._base_s + self._base.elapsed_time(start) / 1e3
            self.rows[index][11] = self._base_s + self._base.elapsed_time(end) / 1e3
            done += 1
        del self._pending[:done]

    def as_dicts(self) -> list[dict]:
        self.flush()
        return [dict(zip(COMM_COLUMNS, r)) for r in self.rows]


class _AsyncOp:
    """A pending isend/irecv; ``wait()`` also closes its trace row."""

    def __init__(self, work, recorder: CommRecorder, index: int, host: bool = False):
        self._work, self._rec, self._index, self._host = work, recorder, index, host

    def wait(self) -> None:
        self._work.wait()
        self._rec.stamp_end(self._index, self._host)


class Comm:
    """The run's process groups by role (``tp``, ``pp``, ``dp``, ``world``) and the ops on them.

    ``groups[name]`` is ``(ProcessGroup or None, global ranks of that group)``; a group of one
    rank issues no op at all. ``p2p[(src, dst)]``: the process group of that directed pipeline
    edge (global ranks; module docstring)."""

    def __init__(
        self,
        groups: dict[str, tuple[object, list[int]]],
        recorder: CommRecorder,
        p2p: dict[tuple[int, int], object] | None = None,
        host_groups: dict[str, object] | None = None,
        host_p2p: dict[tuple[int, int], object] | None = None,
    ):
        self.groups = groups
        self.rec = recorder
        self.p2p = p2p or {}
        self.host_groups = host_groups or {}  # empty: the groups carry host tensors too
        self.host_p2p = host_p2p or {}
        # group -> ShmAllReduce (run.cpu_all_reduce: shm; set by the worker once it knows the
        # largest tensor): the all-reduces that fit go through it, the rest through the group
        self.shm: dict = {}

    def size(self, group: str) -> int:
        return len(self.groups[group][1])

    def _pg(self, group: str, host: bool = False):
        if host and group in self.host_groups:
            return self.host_groups[group]
        return self.groups[group][0]

    def _edge(self, src: int, dst: int, host: bool = False):
        if host and (src, dst) in self.host_p2p:
            return self.host_p2p[(src, dst)]
        return self.p2p.get((src, dst))

    def all_reduce(self, t: torch.Tensor, group: str = "tp") -> torch.Tensor:
        n = self.size(group)
        if n == 1:
            return t
        tok = self.rec.begin()
        shm = self.shm.get(group)
        if shm is not None and shm.fits(t):
            shm(t)
        else:
            dist.all_reduce(t, group=self._pg(group))
        self.rec.end(tok, "all_reduce", group, n, -1, t)
        return t

    def all_gather(self, t: torch.Tensor, group: str = "tp") -> list[torch.Tensor]:
        n = self.size(group)
        if n == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(n)]
        tok = self.rec.begin()
        dist.all_gather(out, t.contiguous(), group=self._pg(group))
        self.rec.end(tok, "all_gather", group, n, -1, t)
        return out

    def broadcast(self, t: torch.Tensor, src: int, group: str, host: bool = False) -> torch.Tensor:
        n = self.size(group)
        if n == 1:
            return t
        tok = self.rec.begin(host)
        dist.broadcast(t, src=src, group=self._pg(group, host))
        self.rec.end(tok, "broadcast", group, n, src, t)
        return t

    # Point-to-point ops address global ranks, on the process group of their directed edge;
    # ``group`` only labels the row.
    def send(self, t: torch.Tensor, dst: int, group: str = "pp", host: bool = False) -> None:
        tok = self.rec.begin(host)
        dist.send(t.contiguous(), dst=dst, group=self._edge(self.rec.rank, dst, host))
        self.rec.end(tok, "send", group, 2, dst, t)

    def recv(self, t: torch.Tensor, src: int, group: str = "pp", host: bool = False):
        tok = self.rec.begin(host)
        dist.recv(t, src=src, group=self._edge(src, self.rec.rank, host))
        self.rec.end(tok, "recv", group, 2, src, t)
        return t

    def isend(self, t: torch.Tensor, dst: int, group: str = "pp", host: bool = False) -> _AsyncOp:
        tok = self.rec.begin(host)
        work = dist.isend(t.contiguous(), dst=dst, group=self._edge(self.rec.rank, dst, host))
        index = self.rec.end(tok, "send", group, 2, dst, t, None if host else work)
        return _AsyncOp(work, self.rec, index, host)

    def irecv(self, t: torch.Tensor, src: int, group: str = "pp") -> _AsyncOp:
        tok = self.rec.begin()
        work = dist.irecv(t, src=src, group=self._edge(src, self.rec.rank))
        return _AsyncOp(work, self.rec, self.rec.end(tok, "recv", group, 2, src, t, work))

    def barrier(self, group: str = "world") -> None:
        if self.size(group) > 1:
            dist.barrier(group=self._pg(group))


def single_process_comm(rank: int = 0, level: str = "counts") -> Comm:
    """A Comm for one process with no process group: every group has one member, no op is issued."""
    return Comm({g: (None, [rank]) for g in ("tp", "pp", "dp", "world")}, CommRecorder(rank, level))
