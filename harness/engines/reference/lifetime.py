"""No process of a run outlives its job: who watches whom, and the environment that says so.

The process tree of ``harness run``: the launcher (``harness run CONFIG``) starts the agent
(``python -m harness.engines.reference.agent``, torch's torchrun), which starts one rank per
process.

* Each rank and the agent ask the kernel for SIGTERM when their parent dies
  (``prctl(PR_SET_PDEATHSIG)``), and each rank also polls (``Lifeline``) that its agent and the
  launcher still live: a SIGKILLed launcher sends no signal, and its pid lingers as a zombie
  until its own parent reaps it, so the poll reads the process state, not just the pid.
* The launcher records the agent's descendants while it waits, and after the agent ends it waits
  for them to end (they stop themselves within ``GRACE_S`` of losing their agent), then kills
  any left, so the exit code is decided only once no rank can write any more.

The only reader of the ``HARNESS_*`` variables below (set by the launcher and the agent).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

from harness.measure import host

LAUNCHER_ENV = "HARNESS_LAUNCHER"  # "HOST:PID" of the `harness run` launcher
AGENT_ENV = "HARNESS_AGENT_PID"  # pid of the torchrun agent that started this rank
FAILURE_DIR_ENV = "HARNESS_FAILURE_DIR"  # folder where ranks and the agent say how they failed
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent ends (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the Lifeline poll still ends the rank


def launcher_env() -> dict[str, str]:
    """What the launcher puts in the environment of its agent (and so of every rank)."""
    return {LAUNCHER_ENV: f"{socket.gethostname()}:{os.getpid()}"}


def failure_dir() -> str | None:
    return os.environ.get(FAILURE_DIR_ENV) or None


def alive(pid: int, born_before: float | None = None) -> bool:
    """``pid`` runs and is not a zombie (and, with ``born_before``, was started before that time:
    a reused pid is a different process)."""
    try:
        p = host.process(pid)
        if born_before is not None and p.create_time() > born_before + 1.0:
            return False
        return not p.is_zombie()
    except (host.NoSuchProcess, ValueError):
        return False


class Lifeline:
    """The processes a rank must not outlive: its agent (its parent) and, on the launcher's node,
    the launcher. ``lost()`` names the first one gone, else None."""

    def __init__(self) -> None:
        agent = os.environ.get(AGENT_ENV)
        self.agent = int(agent) if agent and agent.isdigit() else os.getppid()
        self.me_started = host.process().create_time()
        self.launcher: int | None = None
        name, _, pid = os.environ.get(LAUNCHER_ENV, "").rpartition(":")
        if pid.isdigit() and name == socket.gethostname():
            self.launcher = int(pid)

    def lost(self) -> str | None:
        if os.getppid() != self.agent:
            return f"its torchrun agent (pid {self.agent}) died"
        if self.launcher is not None and not alive(self.launcher, born_before=self.me_started):
            return f"the harness run launcher (pid {self.launcher}) died"
        return None


def descendants(pid: int) -> list:
    """Processes under ``pid`` (any depth, ``harness.measure.host.Proc``); [] when it is gone."""
    try:
        return host.process(pid).children()
    except host.NoSuchProcess:
        return []


def reap(procs: list, wait_s: float) -> list[int]:
    """Wait up to ``wait_s`` for ``procs`` (from ``descendants``) to end, then SIGKILL those left;
    returns the pids that had to be killed."""
    left = host.wait_gone(procs, wait_s)
    for p in left:
        p.kill()
    host.wait_gone(left, 5)
    return [p.pid for p in left]
