"""What ``dist.init`` hands torch.distributed, checked on the CPU with torch.distributed's set-up
calls recorded (issue 26, finding 4): on CUDA the default group is bound to the rank's device
(eager NCCL init), every rank creates the same groups in the same order, and every directed
pipeline edge has a process group of its own (one NCCL communicator and stream per direction),
which ``Comm`` then uses for that edge's sends and receives. Also ``run.device: auto`` on a spec of
the CPU twin."""

from __future__ import annotations

import datetime

import pytest
import torch

from harness.engines.reference import dist as hdist
from harness.spec.layout import Layout

TP2_PP2 = Layout(2, 2, 1, (1, 1))  # ranks: stage 0 = [0, 1], stage 1 = [2, 3]


def _init_all(monkeypatch, layout: Layout, cuda: bool):
    """``init`` on every rank of ``layout``; -> per rank (its calls, its DistContext)."""
    out = {}
    for rank in range(layout.world_size):
        calls = []
        env = hdist.LaunchEnv(rank, layout.world_size, rank, layout.world_size, "h", True)
        monkeypatch.setattr(hdist, "launch_env", lambda env=env: env)
        monkeypatch.setattr(hdist.dist, "is_initialized", lambda: False)
        monkeypatch.setattr(
            hdist.dist, "init_process_group", lambda **kw: calls.append(("init", kw))
        )

        def new_group(ranks, calls=calls, **kw):
            calls.append(("new_group", tuple(ranks), kw))
            return ("pg", sum(c[0] == "new_group" for c in calls) - 1, tuple(ranks))

        monkeypatch.setattr(hdist.dist, "new_group", new_group)
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        monkeypatch.setattr(hdist, "pick_device", lambda *a, device=device: device)
        ctx = hdist.init(layout, "auto", None, 42.0, "timing", "H100-SXM-80GB")
        out[rank] = (calls, ctx)
    return out


@pytest.mark.parametrize("cuda", [True, False])
def test_init_process_group_and_new_group_arguments(monkeypatch, cuda):
    ranks = _init_all(monkeypatch, TP2_PP2, cuda)
    timeout = datetime.timedelta(seconds=42.0)
    sequences = set()
    for rank, (calls, ctx) in ranks.items():
        init = [kw for c in calls if c[0] == "init" for kw in [c[1]]]
        want = {"backend": "nccl" if cuda else "gloo", "timeout": timeout}
        if cuda:  # bound to this rank's device: eager NCCL init, subgroups split from it
            want["device_id"] = torch.device("cuda", rank)
        assert init == [want]
        *groups, end = [c for c in calls if c[0] == "new_group"]
        # last, every rank's end group (engine.close): gloo, here the world's timeout (no run's)
        assert end[1:] == ((0, 1, 2, 3), {"timeout": timeout, "backend": "gloo"})
        assert ctx.end_group == ("pg", len(groups), (0, 1, 2, 3))
        device_groups, host = groups[:7], groups[7:]
        assert all(kw == {"timeout": timeout} for _, _, kw in device_groups)
        # on NCCL the headers' gloo twins: the TP groups, then the edges (none on gloo)
        assert all(kw == {"timeout": timeout, "backend": "gloo"} for _, _, kw in host)
        assert [r for _, r, _ in host] == ([(0, 1), (2, 3), (0, 2), (1, 3), (0, 2)] if cuda else [])
        sequences.add(tuple(r for _, r, _ in device_groups))
        assert ctx.backend == want["backend"] and ctx.comm.rec.cuda == cuda
        comm = ctx.comm
        if cuda:  # the header of a step goes on the twin, the payload on the device group
            mine = [e for e in ((0, 2), (1, 3), (2, 0)) if rank in e]
            assert set(comm.host_p2p) == set(mine) and ("tp" in comm.host_groups)
            for e in mine:
                assert comm._edge(*e, host=True) != comm._edge(*e)
            assert comm._pg("tp", host=True) != comm._pg("tp")
        else:
            assert comm.host_p2p == {} and comm.host_groups == {}
    # the same groups in the same order on every rank: tp, pp, then the edges 0->2, 1->3, 2->0
    assert sequences == {((0, 1), (2, 3), (0, 2), (1, 3), (0, 2), (1, 3), (0, 2))}


def test_every_pipeline_edge_and_direction_has_its_own_group(monkeypatch):
    ranks = _init_all(monkeypatch, TP2_PP2, cuda=True)
    p2p = {r: ctx.comm.p2p for r, (_, ctx) in ranks.items()}
    assert hdist.pipeline_edges(TP2_PP2) == [(0, 2), (1, 3), (2, 0)]
    assert set(p2p[0]) == {(0, 2), (2, 0)} and set(p2p[2]) == {(0, 2), (2, 0)}
    assert set(p2p[1]) == set(p2p[3]) == {(1, 3)}
    # both ends of an edge hold the same group; the two directions of 0 <-> 2 are two groups
    assert p2p[0][(0, 2)] == p2p[2][(0, 2)] and p2p[0][(2, 0)] == p2p[2][(2, 0)]
    assert p2p[0][(0, 2)] != p2p[0][(2, 0)]
    # the role groups are not used for point-to-point ops
    role = {id(g) for _, ctx in ranks.values() for g, _ in ctx.comm.groups.values() if g}
    assert not role & {id(g) for e in p2p.values() for g in e.values()}


def test_sends_and_receives_go_on_their_edge_group(monkeypatch):
    """``Comm`` passes the edge's group to torch.distributed: rank 0's send to rank 2 and rank 2's
    receive from rank 0 name the same group, and the tokens sent back another."""
    ranks = _init_all(monkeypatch, TP2_PP2, cuda=False)
    seen = []
    for op in ("send", "recv", "isend", "irecv"):
        monkeypatch.setattr(
            hdist.dist, op, lambda t, op=op, **kw: seen.append((op, kw["group"])) or _Done()
        )
    c0, c2 = ranks[0][1].comm, ranks[2][1].comm
    t = torch.zeros(2)
    c0.isend(t, 2).wait()
    c2.recv(t, 0)
    c2.isend(t, 0).wait()
    c0.recv(t, 2)
    fwd, back = c0.p2p[(0, 2)], c0.p2p[(2, 0)]
    assert seen == [("isend", fwd), ("recv", fwd), ("isend", back), ("recv", back)]


class _Done:
    def wait(self):
        return None


def test_device_auto_keeps_the_cpu_twin_on_the_cpu(monkeypatch):
    """``cluster.gpu: cpu`` describes the CPU twin (its plan, KV layout and floors): ``device:
    auto`` must not put it on a GPU the machine happens to have; a GPU spec takes the GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    env = hdist.LaunchEnv(0, 1, 0, 1, None, False)
    assert hdist.pick_device("auto", env, None, "cpu") == torch.device("cpu")
    assert hdist.pick_device("auto", env, None, "H100-SXM-80GB") == torch.device("cuda", 0)
    assert hdist.pick_device("cuda", env, None, "cpu") == torch.device("cuda", 0)  # asked for
    assert hdist.pick_device("cpu", env, None, "H100-SXM-80GB") == torch.device("cpu")
