"""A pure-Python model of NCCL's streams, to check that the pipeline's send/recv order cannot
wait in a cycle (issue 26, finding 4). Two parts:

``record_pipeline(pp, micro_batches, tp)``: every rank of one replica runs the real
``PipelineStage`` (the coordinator under the real ``ServeLoop`` and ``Scheduler``) in a thread,
with process groups from the real ``dist.make_groups`` and ``torch.distributed`` replaced by
in-process FIFO queues (a send never blocks, as gloo's); each rank's ops are recorded in the order
its host issues them: ``Op(kind, channel, peer)``, the channel being the process group the code
passed (``"default"`` for none). The model's compute is a stand-in of the right shapes: the
order of ops does not depend on the numbers.

``replay(trace, channel_of)``: NCCL's semantics on that order. Each (rank, communicator) is one
stream whose ops run in issue order; a send completes only together with its receive, both at the
head of their streams (a rendezvous: what NCCL does with a message larger than its buffers, and
the conservative choice: buffering only removes waits); a collective completes when every member
has it at the head; the host issues a rank's ops in program order and stops after a receive, a
collective or a ``wait()`` until that op has completed (it reads a received header or the tokens
right away, and what it issues later depends on the data through the compute stream: a
superset of the real waits, so no cycle here means none on the GPU). Returns None when every op
completes, else the ops stuck at the heads of their streams (a wait cycle).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from harness.engines.reference import dist as hdist
from harness.engines.reference.comm import Comm, CommRecorder
from harness.engines.reference.loop import ServeLoop
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.scheduler import Scheduler
from harness.spec.layout import Layout
from harness.spec.workload import Request

HIDDEN, VOCAB = 8, 16


@dataclass(frozen=True)
class Op:
    uid: int
    rank: int
    kind: str  # send | recv | coll | wait
    channel: object
    peer: object  # send/recv: the other rank; coll: the members; wait: the uid waited for
    step: int = -1

    def __str__(self) -> str:
        what = {"send": f"send to {self.peer}", "recv": f"recv from {self.peer}"}
        return f"rank {self.rank} {what.get(self.kind, self.kind)} (step {self.step})"


@dataclass
class _World:
    layout: Layout
    local: threading.local = field(default_factory=threading.local)
    queues: dict = field(default_factory=lambda: defaultdict(queue.Queue))
    lock: threading.Lock = field(default_factory=threading.Lock)
    trace: dict = field(default_factory=lambda: defaultdict(list))
    uids: itertools.count = field(default_factory=itertools.count)
    steps: dict = field(default_factory=dict)  # rank -> its Comm recorder (the step of an op)


class _Work:
    def __init__(self, world: _World, uid: int):
        self.world, self.uid = world, uid

    def wait(self) -> None:
        _record(self.world, "wait", None, self.uid)


def _record(world: _World, kind: str, channel, peer) -> int:
    rank = world.local.rank
    with world.lock:
        uid = next(world.uids)
    world.trace[rank].append(Op(uid, rank, kind, channel, peer, world.steps[rank].step))
    return uid


class FakeDist:
    """The torch.distributed calls ``Comm`` makes, between threads of one process."""

    def __init__(self, world: _World):
        self.w = world

    def _q(self, channel, src, dst) -> queue.Queue:
        with self.w.lock:
            return self.w.queues[(channel, src, dst)]

    @staticmethod
    def _channel(group):
        return "default" if group is None else group

    def send(self, t, dst, group=None):
        uid = _record(self.w, "send", self._channel(group), dst)
        self._q(self._channel(group), self.w.local.rank, dst).put(t.clone())
        return _Work(self.w, uid)

    isend = send

    def recv(self, t, src, group=None):
        uid = _record(self.w, "recv", self._channel(group), src)
        got = self._q(self._channel(group), src, self.w.local.rank).get(timeout=60)
        t.view(-1).copy_(got.reshape(-1))  # bytes, whatever the shapes (as NCCL and gloo)
        return _Work(self.w, uid)

    irecv = recv

    def _members(self, group) -> tuple[int, ...]:
        return group[2]  # the fake group token: ("pg", index, ranks)

    def broadcast(self, t, src, group):
        me, members = self.w.local.rank, self._members(group)
        _record(self.w, "coll", group, members)
        if me == src:
            for m in members:
                if m != me:
                    self._q(group, me, m).put(t.clone())
        else:
            t.copy_(self._q(group, src, me).get(timeout=60))

    def all_gather(self, out, t, group):
        me, members = self.w.local.rank, self._members(group)
        _record(self.w, "coll", group, members)
        for m in members:
            if m != me:
                self._q(group, me, m).put(t.clone())
        for i, m in enumerate(members):
            out[i].copy_(t if m == me else self._q(group, m, me).get(timeout=60))

    def all_reduce(self, t, group):
        parts = [torch.empty_like(t) for _ in self._members(group)]
        self.all_gather(parts, t, group)
        t.copy_(torch.stack(parts).sum(0))

    def barrier(self, group=None):
        return None


class _Shape:
    hidden = HIDDEN


class StandInStage(nn.Module):
    """A stage's forward with the right shapes and no arithmetic worth the name: hidden states of
    zeros, or logits whose argmax is the step's first slot (any token will do)."""

    def __init__(self, is_last: bool, tp: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.shape, self.is_last, self.tp = _Shape(), is_last, tp

    def forward(self, x, slots, start_pos, n_tokens, host=None):
        if self.is_last:
            logits = torch.zeros(len(slots), VOCAB // self.tp)
            logits[torch.arange(len(slots)), slots % (VOCAB // self.tp)] = 1.0
            return logits
        return torch.zeros(x.shape[0], HIDDEN)

    def index(self, slots, start_pos, n_tokens, host=None):  # StageModel's surface
        return (slots, start_pos, n_tokens)

    def forward_indexed(self, x, batch):
        return self.forward(x, *batch)


def record_pipeline(pp: int, micro_batches: int, tp: int = 1) -> dict[int, list[Op]]:
    """Each rank's ops, in issue order, for 2·micro_batches requests (3 prompt tokens, 3 output
    tokens, one row per micro-batch) served with ``micro_batches`` in flight."""
    layout = Layout(tp, pp, 1, (1,) * pp)
    world = _World(layout)
    fake = FakeDist(world)
    from harness.engines.reference import comm as comm_mod

    errors: list[BaseException] = []
    real_dist = comm_mod.dist
    comm_mod.dist = fake
    try:
        stages = {}
        for rank in range(layout.world_size):
            index = itertools.count()
            groups, p2p = hdist.make_groups(
                layout, rank, lambda ranks, index=index: ("pg", next(index), tuple(ranks))
            )
            rec = CommRecorder(rank, "off")
            world.steps[rank] = rec
            ctx = hdist.DistContext(
                hdist.LaunchEnv(rank, layout.world_size, rank, layout.world_size, None, True),
                layout,
                layout.place(rank),
                torch.device("cpu"),
                "gloo",
                Comm(groups, rec, p2p),
            )
            model = StandInStage(layout.place(rank).stage == pp - 1, tp)
            stages[rank] = PipelineStage(ctx, model, max_batch=1, max_tokens=8)

        def run(rank: int) -> None:
            world.local.rank = rank
            try:
                stage = stages[rank]
                if not stage.is_coordinator:
                    stage.serve_forever()
                    return
                n = 2 * micro_batches
                reqs = [Request(i, 0.0, 3, 3) for i in range(n)]
                sched = Scheduler(
                    reqs, lambda r: [1, 2, 3], num_slots=n, max_batch=1, max_seq_len=8
                )
                ServeLoop(stage, micro_batches, torch.device("cpu"), time.monotonic, 0).run(
                    sched, time.monotonic()
                )
                stage.stop()
            except BaseException as e:  # reported by the caller
                errors.append(e)

        threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in stages]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        if any(t.is_alive() for t in threads):
            raise RuntimeError("the recorded pipeline did not finish (a queue never filled)")
    finally:
        comm_mod.dist = real_dist
    if errors:
        raise errors[0]
    return dict(world.trace)


def as_issued(op: Op) -> object:
    """The communicator an op runs on: the process group the code passed."""
    return op.channel


def one_stream_per_rank(op: Op) -> object:
    """Every point-to-point op on one communicator per rank: NCCL in eager-init mode with the
    ops on the default group (the set-up before issue 26)."""
    return "default" if op.kind in ("send", "recv", "wait") else op.channel


def replay(
    trace: dict[int, list[Op]], channel_of: Callable[[Op], object] = as_issued
) -> list[str] | None:
    """None if every op completes under NCCL's stream semantics (module docstring), else the ops
    stuck at the heads of their streams."""
    pc = {r: 0 for r in trace}
    waiting_for: dict[int, int | None] = {r: None for r in trace}
    streams: dict[tuple[int, object], deque] = defaultdict(deque)
    done: set[int] = set()
    progress = True
    while progress:
        progress = False
        for r, ops in trace.items():  # each host issues until it must wait
            while pc[r] < len(ops) and (waiting_for[r] is None or waiting_for[r] in done):
                op = ops[pc[r]]
                pc[r] += 1
                waiting_for[r] = None
                progress = True
                if op.kind == "wait":
                    waiting_for[r] = op.peer
                    continue
                streams[(r, channel_of(op))].append(op)
                if op.kind in ("recv", "coll"):
                    waiting_for[r] = op.uid
        for (r, ch), q in list(streams.items()):  # stream heads that can complete together
            if not q:
                continue
            head = q[0]
            if head.kind == "send":
                other = streams.get((head.peer, ch))
                if other and other[0].kind == "recv" and other[0].peer == r:
                    done.update((q.popleft().uid, other.popleft().uid))
                    progress = True
            elif head.kind == "coll":
                qs = [streams.get((m, ch)) for m in head.peer]
                if all(m and m[0].kind == "coll" for m in qs):
                    done.update(m.popleft().uid for m in qs)
                    progress = True
    if all(pc[r] == len(ops) for r, ops in trace.items()) and not any(streams.values()):
        return None
    return [f"{q[0]} on {ch}" for (r, ch), q in sorted(streams.items(), key=str) if q]
