"""Stopping a rank: SIGTERM/SIGINT or the run timeout become a stop request, then a hard exit.

The signals are taken by a thread (``sigwait``) so they are seen even while the main thread waits
inside a collective; the callback (rank 0: write what completed, marked incomplete) runs there,
and the process ends with exit 3 after a short grace. No torch import: ``python -m harness``
blocks the signals before anything else starts a thread.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from harness.errors import EXIT_INCOMPLETE

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
GRACE_S = 5.0


def block_stop_signals() -> None:
    """Call before any thread starts: every thread inherits the mask, so only ``sigwait`` sees them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class StopGuard:
    """Turns SIGTERM/SIGINT or the run timeout into a stop request, and a hard exit after a grace."""

    def __init__(self, timeout_s: float, on_stop):
        self.reason: str | None = None
        self._event = threading.Event()
        self._on_stop = on_stop
        threading.Thread(target=self._wait_signal, daemon=True, name="harness-signals").start()
        threading.Thread(target=self._watchdog, args=(timeout_s,), daemon=True, name="harness-timeout").start()

    def is_set(self) -> bool:
        return self._event.is_set()

    def _trip(self, reason: str) -> None:
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        print(f"harness: stopping: {reason}", file=sys.stderr, flush=True)
        try:
            self._on_stop(reason)
        finally:
            time.sleep(GRACE_S)          # let the main thread end cleanly if it can
            os._exit(EXIT_INCOMPLETE)

    def _wait_signal(self) -> None:
        sig = signal.sigwait(STOP_SIGNALS)
        self._trip(f"received {signal.Signals(sig).name}")

    def _watchdog(self, timeout_s: float) -> None:
        if not self._event.wait(timeout_s):
            self._trip(f"run.timeout_s={timeout_s:g} s exceeded")
