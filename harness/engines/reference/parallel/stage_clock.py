"""Stage timestamps that do not stop the device: the pipeline stage's four stamps per step.

CPU: ``time.monotonic()`` when the stamp is taken. CUDA: a ``torch.cuda.Event`` recorded on the
current stream, so the stamp is when the *device* reaches that point of the step, and the host
runs on without waiting (a ``torch.cuda.synchronize`` per step would remove the very CPU/GPU
overlap the stages are timed for). Event times are tied to the monotonic clock by one base event
recorded at a known monotonic time (one sync, at the first stamp, as ``CommRecorder`` does), and
resolved later: the oldest finished steps every ``RESOLVE_EVERY`` steps (``Event.query``, no
sync), everything at the end of the window (one sync).

A resolved row: ``{"step", "t_recv_start", "t_recv_end", "t_compute_end", "t_send_end"}`` in
monotonic seconds, the same on both devices."""

from __future__ import annotations

import time

import torch

STAMPS = ("t_recv_start", "t_recv_end", "t_compute_end", "t_send_end")


class StageClock:
    RESOLVE_EVERY = 64  # CUDA: steps between non-blocking resolves of finished events

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.rows: list[dict] = []  # resolved, in step order
        self._pending: list[tuple[int, list]] = []  # CUDA: (step, [event per stamp])
        self._base = None
        self._base_s = 0.0

    def stamp(self):
        """A point of the step: monotonic seconds (CPU) or a recorded event (CUDA)."""
        if not self.cuda:
            return time.monotonic()
        if self._base is None:
            torch.cuda.synchronize()
            self._base = torch.cuda.Event(enable_timing=True)
            self._base.record()
            torch.cuda.synchronize()
            self._base_s = time.monotonic()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def add(self, step: int, stamps: list) -> None:
        """One step's four stamps (``STAMPS`` order)."""
        if not self.cuda:
            self.rows.append({"step": step, **dict(zip(STAMPS, stamps))})
            return
        self._pending.append((step, stamps))
        if len(self._pending) >= self.RESOLVE_EVERY:
            self.resolve(block=False)

    def resolve(self, block: bool = True) -> list[dict]:
        """Turn pending events into rows: all of them after one sync (``block``), else only the
        oldest steps whose last event has completed. Returns every resolved row."""
        if self._pending:
            if block:
                torch.cuda.synchronize()
            done = 0
            for step, events in self._pending:
                if not block and not events[-1].query():
                    break
                self.rows.append(
                    {
                        "step": step,
                        **{
                            k: self._base_s + self._base.elapsed_time(ev) / 1e3
                            for k, ev in zip(STAMPS, events)
                        },
                    }
                )
                done += 1
            del self._pending[:done]
        return self.rows
