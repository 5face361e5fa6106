"""Stop requests for a run against an external engine: SIGTERM, SIGINT, SIGHUP, the run's timeout
or a dead server all become one reason and one asyncio event.

The handlers are installed for the whole ``harness run`` (``StopSignals``) and never raise: a
signal while the client runs sets the event of the running loop (the client then cancels its
streams, the run is written incomplete and the server stopped: exit 3); a signal outside it is
remembered, and whoever comes next (the next capacity probe, the next launch) does not start.
Anything that would kill this process outright (SIGKILL) is the reaper's business.
"""

from __future__ import annotations

import asyncio
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopSignals:
    """Process-wide stop state; use as a context manager around the run."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopSignals":
        for s in STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _on_signal(self, signum, _frame) -> None:
        self.trip(f"received {signal.Signals(signum).name}")

    def trip(self, reason: str) -> None:
        """Ask the run to stop (first reason wins); safe from a signal handler or any thread."""
        if self.reason is None:
            self.reason = reason
            print(f"harness: stopping: {reason}", file=sys.stderr, flush=True)
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop just closed

    def attach(self) -> asyncio.Event:
        """The event for the running loop (set at once when a stop was asked before)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self.reason is not None:
            self._event.set()
        return self._event

    def detach(self) -> None:
        self._loop = self._event = None
