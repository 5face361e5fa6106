"""The recorder's CUDA-event bookkeeping, with a scripted stand-in for torch.cuda (no GPU here)."""

import pytest
import torch

from harness.engines.reference.comm import COMM_COLUMNS, CommRecorder


class FakeEvent:
    clock_ms = 0.0  # the "device" clock
    done_up_to_ms = 1e18  # events recorded at or before this have completed

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        self.t = FakeEvent.clock_ms

    def query(self):
        return self.t <= FakeEvent.done_up_to_ms

    def elapsed_time(self, other):
        return other.t - self.t


def test_cuda_events_resolve_without_sync_in_the_hot_path(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    rec = CommRecorder(rank=0, level="timing", cuda=True)
    rec.RESOLVE_EVERY = 3
    t = torch.zeros(4)
    FakeEvent.done_up_to_ms = 1e18
    for i in range(2):  # ops 0, 1: 10 ms apart, each 2 ms long
        FakeEvent.clock_ms = 10.0 * i
        tok = rec.begin()
        FakeEvent.clock_ms += 2.0
        rec.end(tok, "all_reduce", "tp", 2, -1, t)
    assert len(syncs) == 2  # only the base event's, at the first op
    FakeEvent.done_up_to_ms = 15.0  # op 2 not finished yet
    FakeEvent.clock_ms = 20.0
    tok = rec.begin()
    FakeEvent.clock_ms = 23.0
    rec.end(tok, "send", "pp", 2, 3, t)  # 3 pending -> non-blocking resolve of the finished prefix
    assert len(syncs) == 2 and len(rec._pending) == 1
    rows = rec.as_dicts()  # end of window: one sync, everything resolved
    assert len(syncs) == 3 and not rec._pending
    base = rec._base_s
    got = [(r["t_start_s"] - base, r["t_end_s"] - base) for r in rows]
    want = [(0.0, 0.002), (0.010, 0.012), (0.020, 0.023)]
    assert all(abs(a - c) < 1e-12 and abs(b - d) < 1e-12 for (a, b), (c, d) in zip(got, want))
    assert tuple(rows[0]) == COMM_COLUMNS and rows[2]["op"] == "send" and rows[2]["bytes"] == 16


def test_async_send_and_recv_end_when_the_transfer_completes(monkeypatch):
    """Issue 26, finding 3. On CUDA an isend/irecv returns when the op is queued; its row must end
    when the transfer completes, not when it was queued (every pipeline send lasted microseconds
    and its GB/s was absurd) nor when the pipeline got round to ``wait()`` (later compute would
    count as transfer). ``FakeStreams``: the compute stream reaches 1.0 s, a send of 0.5 s and a
    receive of 0.2 s are issued there, 3 s more of compute is queued, the ops are waited only
    after it; a blocking recv of 0.1 s then runs after that compute."""
    from fake_device import FakeStreams
    from harness.engines.reference import comm as comm_mod

    streams = FakeStreams().install(monkeypatch)
    durations = {"isend": 0.5, "irecv": 0.2, "recv": 0.1}

    def op(name):
        def issue(t, **kw):
            work = streams.work(durations[name])
            if name == "recv":  # blocking: NCCL makes the current stream wait
                work.wait()
            return work

        return issue

    for name in durations:
        monkeypatch.setattr(comm_mod.dist, name, op(name))
    rec = CommRecorder(rank=0, level="timing", cuda=True)
    c = comm_mod.Comm({"pp": (None, [0, 1])}, rec)
    t = torch.zeros(1024)
    streams.run(1.0)
    send = c.isend(t, 1)
    recv = c.irecv(t, 1)
    streams.run(3.0)  # compute queued behind the transfers
    send.wait()
    recv.wait()
    c.recv(t, 1)
    rows = rec.as_dicts()
    assert [(r["op"], r["peer"]) for r in rows] == [("send", 1), ("recv", 1), ("recv", 1)]
    dur = [r["t_end_s"] - r["t_start_s"] for r in rows]
    assert dur == [pytest.approx(0.5), pytest.approx(0.2), pytest.approx(0.1)]
    starts = [r["t_start_s"] - rows[0]["t_start_s"] for r in rows]
    assert starts == [0.0, 0.0, pytest.approx(3.0)]  # the blocking recv after the compute
    # neither the compute stream nor the host waited for the async ops when they were issued
    assert streams.compute.t == pytest.approx(4.1)
