"""CPU stand-ins for what a GPU does asynchronously, for the contract tests of the CUDA path
(issue 26; reused by [engine-speed]).

- ``DeviceClock``: the host's monotonic clock when every kernel is queued, not run: it advances
  only when the host waits for the device (``DeviceTokens.tolist()``, ``sync``) or sleeps. A
  value read before such a wait is a queue time, not a completion time.
- ``DeviceTokens``: a step's sampled tokens still on the device; reading them (``tolist``, ``int``)
  waits for the step, i.e. advances the clock to the step's completion.
- ``FakeStage``: a ``PipelineStage`` stand-in for ``ServeLoop``: each submitted step takes
  ``step_s`` of device time, queued behind the steps before it; tokens are ``1000 + step``.
- ``FakeStreams``: CUDA streams, events and ``Work`` objects with a timeline: an event is stamped
  with the time its stream reaches it; ``work.wait()`` makes the current stream wait for the op.
  ``install(monkeypatch)`` puts it in ``torch.cuda`` (``Event``, ``Stream``, ``stream``,
  ``current_stream``, ``synchronize``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from harness.engines.reference.comm import CommRecorder


class DeviceClock:
    """``clock()`` for the loop: host time, advanced only by waits on the device and sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.device_free_at = 0.0  # when the device finishes what has been queued so far
        self.reads: list[float] = []  # every clock read, in order

    def __call__(self) -> float:
        self.reads.append(self.now)
        return self.now

    def queue(self, seconds: float) -> float:
        """Queue ``seconds`` of device work behind what is queued; -> its completion time."""
        self.device_free_at = max(self.device_free_at, self.now) + seconds
        return self.device_free_at

    def wait_until(self, t: float) -> None:
        self.now = max(self.now, t)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class DeviceTokens:
    """Sampled tokens on the device, ready at ``ready_s``; reading them waits for that."""

    def __init__(self, values: list[int], clock: DeviceClock, ready_s: float):
        self.values, self.clock, self.ready_s = values, clock, ready_s

    def tolist(self) -> list[int]:
        self.clock.wait_until(self.ready_s)
        return list(self.values)

    def __len__(self) -> int:
        return len(self.values)


class _Ctx:
    def __init__(self) -> None:
        self.comm = type("FakeComm", (), {"rec": CommRecorder(0, "off")})()


class FakeStage:
    """What ``ServeLoop`` sees of a pipeline: ``submit`` queues the step (``step_s`` of device
    time) and returns at once; with ``pp == 1`` it returns the step's tokens (still on the
    device), else ``collect`` returns the oldest step's."""

    def __init__(self, clock: DeviceClock, step_s: float, pp: int = 1):
        self.clock, self.step_s, self.pp = clock, step_s, pp
        self.ctx = _Ctx()
        self._in_flight: list[tuple[object, DeviceTokens]] = []

    def submit(self, meta, ids) -> DeviceTokens | None:
        ready = self.clock.queue(self.step_s * self.pp)
        tokens = DeviceTokens([1000 + meta.step] * meta.batch, self.clock, ready)
        if self.pp == 1:
            return tokens
        self._in_flight.append((meta, tokens))
        return None

    def collect(self):
        meta, tokens = self._in_flight.pop(0)
        return meta, tokens


# ---------------------------------------------------------------- CUDA streams and events


class FakeEvent:
    """``torch.cuda.Event``: ``record()`` stamps the time the current stream reaches it."""

    def __init__(self, streams: "FakeStreams", enable_timing: bool = False):
        self.streams, self.t = streams, None
        self.stream = None

    def record(self, stream=None) -> None:
        stream = stream or self.streams.current
        self.stream, self.t = stream, stream.t

    def query(self) -> bool:
        return self.t is not None and self.t <= self.streams.host_t

    def synchronize(self) -> None:
        self.streams.host_t = max(self.streams.host_t, self.t)

    def elapsed_time(self, end: "FakeEvent") -> float:
        return (end.t - self.t) * 1e3  # ms, as torch's


class FakeStream:
    def __init__(self, name: str):
        self.name, self.t = name, 0.0

    def wait_stream(self, other: "FakeStream") -> None:
        self.t = max(self.t, other.t)


class FakeWork:
    """A queued collective or point-to-point op that completes at ``done_s`` on its own stream;
    ``wait()`` makes the CURRENT stream wait for it (NCCL's semantics: the host does not wait)."""

    def __init__(self, streams: "FakeStreams", done_s: float):
        self.streams, self.done_s = streams, done_s
        self.waited_on: list[str] = []

    def wait(self) -> None:
        cur = self.streams.current
        cur.t = max(cur.t, self.done_s)
        self.waited_on.append(cur.name)

    def is_completed(self) -> bool:
        return self.done_s <= self.streams.host_t


class FakeStreams:
    """One device's streams: ``compute`` (the default) and any made with ``torch.cuda.Stream()``;
    ``host_t`` is how far the host has waited."""

    def __init__(self) -> None:
        self.compute = FakeStream("compute")
        self.current = self.compute
        self.made: list[FakeStream] = []
        self.host_t = 0.0

    def run(self, seconds: float) -> None:
        """Queue ``seconds`` of kernels on the current stream."""
        self.current.t += seconds

    def work(self, seconds: float) -> FakeWork:
        """An async op that starts when the current stream reaches this point and takes
        ``seconds`` on its own stream (a send/recv or collective on NCCL's stream)."""
        return FakeWork(self, self.current.t + seconds)

    def synchronize(self, device=None) -> None:
        self.host_t = max([self.host_t, self.compute.t, *(s.t for s in self.made)])

    def new_stream(self, device=None, priority: int = 0) -> FakeStream:
        s = FakeStream(f"side{len(self.made)}")
        self.made.append(s)
        return s

    @contextmanager
    def stream(self, s: FakeStream):
        prev, self.current = self.current, s
        try:
            yield s
        finally:
            self.current = prev

    def install(self, monkeypatch) -> "FakeStreams":
        monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: FakeEvent(self))
        monkeypatch.setattr(torch.cuda, "Stream", self.new_stream)
        monkeypatch.setattr(torch.cuda, "stream", self.stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        monkeypatch.setattr(torch.cuda, "synchronize", self.synchronize)
        return self
