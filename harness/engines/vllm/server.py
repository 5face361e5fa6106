"""One launched vLLM server, from ``harness run``'s side: start it through the reaper
(``harness.engines.vllm.reaper``), know whether it still runs, read its log, stop its whole tree.

The reaper's stdin pipe is held only by this process; if this process dies in any way the reaper
stops the server. ``stop()`` asks for the same thing explicitly and waits until the server's
session is empty; should the reaper itself be unresponsive, the session is killed from here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from harness import REPO_ROOT
from harness.engines.vllm.command import ServerLaunch
from harness.engines.vllm.tree import session_members, stop_session

STOP_GRACE_S = 15.0  # SIGTERM → SIGKILL; vLLM's own shutdown takes ~2 s when no stream is open


class ServerTree:
    """A vLLM server started in its own session by the reaper; ``pid`` is its session id."""

    def __init__(self, launch: ServerLaunch, log_path: str | Path, grace_s: float = STOP_GRACE_S):
        self.launch, self.grace_s = launch, grace_s
        self.log_path = Path(log_path)
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.stopped: dict | None = None
        self.started_at: float | None = None
        self._start_error = ""
        self._reaper: subprocess.Popen | None = None
        self._events = threading.Condition()

    def start(self) -> "ServerTree":
        """Start the reaper, which starts the server; returns once the server process exists."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(f"# {self.launch.command_text()}\n")
        self.started_at = time.monotonic()
        # A new session: Ctrl-C or a signal to harness run's process group never reaches the reaper.
        # the reaper imports harness from here
        package_root = str(REPO_ROOT)
        reaper_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [package_root]
                + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
        }
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "harness.engines.vllm.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=reaper_env,
        )
        # The server gets this process's environment plus the launch's, not the reaper's PYTHONPATH.
        req = {
            "argv": list(self.launch.argv),
            "env": {**os.environ, **self.launch.env},
            "log": str(self.log_path),
            "cwd": os.getcwd(),
            "grace_s": self.grace_s,
        }
        self._reaper.stdin.write(json.dumps(req) + "\n")
        self._reaper.stdin.flush()
        threading.Thread(target=self._read_events, daemon=True, name="vllm-reaper-events").start()
        with self._events:
            if not self._events.wait_for(
                lambda: self.pid is not None or self.exit_code is not None, timeout=60
            ):
                raise RuntimeError("the server's reaper did not start it within 60 s")
        if self.pid is None:
            raise RuntimeError(f"could not start the vLLM server: {self._start_error}")
        return self

    def _read_events(self) -> None:
        for line in self._reaper.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._events:
                if "pid" in ev:
                    self.pid = int(ev["pid"])
                elif "error" in ev:
                    self._start_error = str(ev["error"])
                    self.exit_code = -1
                elif "exit" in ev:
                    self.exit_code = int(ev["exit"])
                elif "stopped" in ev:
                    self.stopped = dict(ev["stopped"])
                self._events.notify_all()
        with self._events:  # the reaper ended: whatever it did not say, it will not say now
            if self.exit_code is None and self.pid is None:
                self.exit_code = -1
                self._start_error = self._start_error or "the reaper exited"
            self._events.notify_all()

    @property
    def running(self) -> bool:
        """The server's main process has not exited (its children may outlive it: ``stop`` ends
        them)."""
        return self.pid is not None and self.exit_code is None

    def processes(self) -> list[int]:
        """Pids of every live process of the server's session."""
        return [] if self.pid is None else [p for p, _ in session_members(self.pid)]

    def log_tail(self, n: int = 20) -> list[str]:
        try:
            with open(self.log_path, errors="replace") as f:
                return [ln.rstrip("\n") for ln in deque(f, maxlen=n)]
        except OSError:
            return []

    def stop(self) -> dict:
        """End the server's whole tree (TERM, then KILL after ``grace_s``) and remove its leftovers;
        returns the reaper's account (``ended_by``, ``stop_s``, ``exit_code``, ``removed``).
        Idempotent."""
        if self.stopped is not None or self._reaper is None:
            return self.stopped or {}
        try:
            self._reaper.stdin.write("stop\n")
            self._reaper.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
        with self._events:
            self._events.wait_for(lambda: self.stopped is not None, timeout=self.grace_s + 60)
        if self.stopped is None:  # the reaper hung or died: do its job from here
            if self.pid is not None:
                self.stopped = dict(
                    stop_session(self.pid, self.grace_s), by="harness (reaper unresponsive)"
                )
            else:
                self.stopped = {"ended_by": None}
            try:
                os.kill(self._reaper.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self._reaper.stdin.close()
        except OSError:
            pass
        try:
            self._reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._reaper.kill()
        return self.stopped

    def info(self) -> dict:
        """What a run directory records about this server (server.json)."""
        return {
            "pid": self.pid,
            "session": self.pid,
            "reaper_pid": self._reaper.pid if self._reaper else None,
            "url": self.launch.url,
            "model": self.launch.model,
            "argv": list(self.launch.argv),
            "env": self.launch.env,
            "log": self.log_path.name,
        }
