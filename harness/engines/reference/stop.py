"""Stopping a rank: SIGTERM/SIGINT/SIGHUP, the run timeout, or the loss of its agent or launcher
(``harness.engines.reference.lifetime.Lifeline``) become a stop request, then a hard exit.

The signals are taken by a thread (``sigwait``) so they are seen even while the main thread waits
inside a collective; the callback (rank 0: write what completed, marked incomplete) runs there,
and the process ends with exit 3 after a short grace. SIGHUP (the terminal closed) is a stop like
SIGTERM. No torch import: ``python -m harness`` blocks the signals before anything else starts a
thread, and the guard starts before torch is imported, so a signal during start-up is not lost.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from harness.engines.reference.lifetime import Lifeline
from harness.errors import EXIT_INCOMPLETE

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
GRACE_S = 5.0
POLL_S = 0.5


def block_stop_signals() -> None:
    """Call before any thread starts: every thread inherits the mask, so only ``sigwait`` sees
    them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class StopGuard:
    """Turns a stop signal, the loss of the agent or launcher, or (once armed) the run timeout into
    a stop request, and a hard exit after a grace. ``arm`` gives it the timeout and the callback
    that saves what completed; a stop before that just ends the process (nothing is written yet)."""

    def __init__(self, lifeline: Lifeline | None = None):
        self.reason: str | None = None
        self._event = threading.Event()
        self._on_stop = None
        self._lock = threading.Lock()
        self._lifeline = lifeline if lifeline is not None else Lifeline()
        threading.Thread(target=self._wait_signal, daemon=True, name="harness-signals").start()
        threading.Thread(target=self._watch_lifeline, daemon=True, name="harness-lifeline").start()

    def arm(self, timeout_s: float, on_stop) -> None:
        self._on_stop = on_stop
        threading.Thread(
            target=self._watchdog, args=(timeout_s,), daemon=True, name="harness-timeout"
        ).start()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> str | None:
        """Stop now if the agent or launcher is gone (called before the final summary is written);
        returns the stop reason, or None while the run may go on."""
        lost = self._lifeline.lost()
        if lost is not None:
            self._trip(f"{lost}", exit_after=False)
        return self.reason

    def _trip(self, reason: str, exit_after: bool = True) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
        print(f"harness: stopping: {reason}", file=sys.stderr, flush=True)
        try:
            if self._on_stop is not None:
                self._on_stop(reason)
        finally:
            if exit_after:
                time.sleep(GRACE_S)  # let the main thread end cleanly if it can
                os._exit(EXIT_INCOMPLETE)
            threading.Thread(target=self._exit_later, daemon=True, name="harness-exit").start()

    @staticmethod
    def _exit_later() -> None:
        time.sleep(GRACE_S)
        os._exit(EXIT_INCOMPLETE)

    def _wait_signal(self) -> None:
        sig = signal.sigwait(STOP_SIGNALS)
        lost = self._lifeline.lost()  # a parent-death SIGTERM: say who died
        self._trip(
            f"{lost} (received {signal.Signals(sig).name})"
            if lost
            else f"received {signal.Signals(sig).name}"
        )

    def _watch_lifeline(self) -> None:
        while not self._event.wait(POLL_S):
            lost = self._lifeline.lost()
            if lost is not None:
                self._trip(lost)

    def _watchdog(self, timeout_s: float) -> None:
        if not self._event.wait(timeout_s):
            self._trip(f"run.timeout_s={timeout_s:g} s exceeded")
