"""Communication that is recorded, never issued: the layout's groups at their real sizes.

``RecordingComm`` appends the row a real run's ``Comm`` would (same columns) and moves nothing;
``StepComm`` issues the ops a rank makes around its forward in ``PipelineStage``, so one
recorded step holds exactly the ops and bytes of a real one; ``expected_rank_comm`` is the
planner's count of the same ops, to compare with."""

from __future__ import annotations

import torch

from harness.engines.reference.comm import Comm, CommRecorder
from harness.engines.reference.parallel.pp import StepMeta, pack_header
from harness.plan import planner
from harness.spec.layout import Layout, RankPlace


class _NoWait:
    def wait(self) -> None:
        return None


class RecordingComm(Comm):
    """The layout's groups at their real sizes; each op appends the row a real run would (same
    columns: op, group, group size, peer, dtype, elements, bytes) and moves nothing. As in
    ``Comm``, a group of one rank issues nothing; times stay None since nothing ran."""

    def _rec(self, op: str, group: str, n: int, peer: int, t: torch.Tensor) -> None:
        self.rec.end(None, op, group, n, peer, t)

    def all_reduce(self, t, group="tp"):
        if self.size(group) > 1:
            self._rec("all_reduce", group, self.size(group), -1, t)
        return t

    def all_gather(self, t, group="tp"):
        n = self.size(group)
        if n == 1:
            return [t]
        self._rec("all_gather", group, n, -1, t)
        return [t.clone() for _ in range(n)]  # as if every rank held the same values

    def broadcast(self, t, src, group):
        if self.size(group) > 1:
            self._rec("broadcast", group, self.size(group), src, t)
        return t

    def send(self, t, dst, group="pp"):
        self._rec("send", group, 2, dst, t)

    def recv(self, t, src, group="pp"):
        self._rec("recv", group, 2, src, t)
        return t

    def isend(self, t, dst, group="pp"):
        self.send(t, dst, group)
        return _NoWait()

    def irecv(self, t, src, group="pp"):
        self.recv(t, src, group)
        return _NoWait()

    def barrier(self, group="world"):
        return None


def rank_comm(layout: Layout, rank: int) -> RecordingComm:
    """Groups of ``rank`` as ``harness.engines.reference.dist.init`` builds them, with no process
    group behind them."""
    groups: dict[str, tuple[object, list[int]]] = {"world": (None, list(range(layout.world_size)))}
    for name, all_groups in (
        ("tp", layout.tp_groups()),
        ("pp", layout.pp_groups()),
        ("dp", layout.dp_groups()),
    ):
        groups[name] = (None, next(g for g in all_groups if rank in g))
    return RecordingComm(groups, CommRecorder(rank, "off"))


def summarize_comm(rows: list) -> dict[str, dict[str, int]]:
    """Recorder rows -> {"op:group": {count, bytes}}."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        e = out.setdefault(f"{r[3]}:{r[4]}", {"count": 0, "bytes": 0})
        e["count"] += 1
        e["bytes"] += r[9]
    return out


def expected_rank_comm(
    spec, place: RankPlace, header_batch: int, rows: int, tokens: int
) -> dict[str, dict[str, int]]:
    """The planner's ``expected_comm`` for this rank's stage and TP rank, in ``summarize_comm``
    form."""
    out: dict[str, dict[str, int]] = {}
    exp = planner.expected_comm(
        spec.shape, spec.layout, spec.dtype_bytes, header_batch, rows, tokens
    )
    for (s, k, op, group), v in exp.items():
        if s == place.stage and (k is None or k == place.tp):
            e = out.setdefault(f"{op}:{group}", {"count": 0, "bytes": 0})
            e["count"] += v["count"]
            e["bytes"] += v["bytes"]
    return out


class StepComm:
    """The ops a rank issues around its forward in ``PipelineStage`` (same order, sizes, peers)."""

    def __init__(self, comm: Comm, layout: Layout, place: RankPlace, header_batch: int, device):
        self.comm, self.layout, self.place, self.device = comm, layout, place, device
        self.header_batch = header_batch
        p, s, k, d = layout.pp, place.stage, place.tp, place.dp
        self.first, self.last = s == 0, s == p - 1
        self.coordinator = layout.rank_of(d, 0, 0)
        self.prev = layout.rank_of(d, s - 1, k) if s > 0 else None
        self.next = layout.rank_of(d, s + 1, k) if s < p - 1 else None
        self.ret = layout.rank_of(d, p - 1, 0)

    def header(self, meta: StepMeta, n_tok: int) -> torch.Tensor:
        return pack_header(meta, n_tok, self.header_batch, self.device)

    def before(self, hdr: torch.Tensor, x: torch.Tensor) -> None:
        if self.first:
            self.comm.broadcast(hdr, self.coordinator, "tp")
            self.comm.broadcast(x, self.coordinator, "tp")
        else:
            self.comm.recv(hdr, self.prev, "pp")
            self.comm.recv(x, self.prev, "pp")

    def after(self, hdr: torch.Tensor, out: torch.Tensor, rows: int) -> None:
        if not self.last:
            self.comm.isend(hdr, self.next, "pp")
            self.comm.isend(out, self.next, "pp")
        elif not self.first and self.place.tp == 0:
            self.comm.isend(hdr, self.coordinator, "pp")
            self.comm.isend(out, self.coordinator, "pp")
        if (
            self.first and self.place.tp == 0 and self.layout.pp > 1
        ):  # collect(): the tokens come back
            self.comm.recv(hdr, self.ret, "pp")
            self.comm.recv(torch.empty(rows, dtype=torch.long, device=self.device), self.ret, "pp")
