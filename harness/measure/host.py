"""This host's processes and memory: psutil where it is installed, Linux's ``/proc`` where it is
not (the lent GPU machines have no psutil; the run's lifelines and the CPU twin's sampler must
still work there).

``process(pid)`` -> ``Proc`` (raises ``NoSuchProcess``): ``create_time()`` (seconds since the
epoch), ``is_zombie()``, ``is_running()``, ``children()`` (every descendant), ``kill()``,
``rss_bytes()``; ``wait_gone(procs, timeout)`` -> those still running; ``cpu_seconds()`` (this
process's user + system time), ``sys_mem_used_bytes()`` (total − available, as psutil's
``virtual_memory().used`` on Linux is close to; None where unknown)."""

from __future__ import annotations

import os
import signal
import time

try:
    import psutil
except ImportError:  # /proc stands in (Linux)
    psutil = None  # type: ignore[assignment]


class NoSuchProcess(Exception):
    pass


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        raise NoSuchProcess(pid) from None
    return text[text.rindex(")") + 2 :].split()


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


class Proc:
    """One process, through psutil or /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        if psutil is not None:
            try:
                self._p = psutil.Process(pid)
            except psutil.NoSuchProcess:
                raise NoSuchProcess(pid) from None
        else:
            self._p = None
            self._start = self._create_time_proc()

    def _create_time_proc(self) -> float:
        ticks = int(_stat(self.pid)[19])  # field 22: start time in clock ticks after boot
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")

    def create_time(self) -> float:
        if self._p is not None:
            try:
                return self._p.create_time()
            except psutil.NoSuchProcess:
                raise NoSuchProcess(self.pid) from None
        return self._start

    def is_zombie(self) -> bool:
        if self._p is not None:
            try:
                return self._p.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                raise NoSuchProcess(self.pid) from None
        return _stat(self.pid)[0] in ("Z", "X")

    def is_running(self) -> bool:
        """Alive and the same process (a reused pid is another) and not a zombie."""
        if self._p is not None:
            try:
                return self._p.is_running() and self._p.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False
        try:
            return self._create_time_proc() == self._start and not self.is_zombie()
        except NoSuchProcess:
            return False

    def children(self) -> list[Proc]:
        """Every descendant (any depth); [] when this process is gone."""
        if self._p is not None:
            try:
                kids = self._p.children(recursive=True)
            except psutil.NoSuchProcess:
                return []
            out = []
            for k in kids:
                try:
                    out.append(Proc(k.pid))
                except NoSuchProcess:
                    pass
            return out
        parent: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    parent[int(name)] = int(_stat(int(name))[1])
                except (NoSuchProcess, IndexError, ValueError):
                    pass
        found, frontier = [], [self.pid]
        while frontier:
            kids = [p for p, pp in parent.items() if pp in frontier]
            found += kids
            frontier = kids
        out = []
        for pid in found:
            try:
                out.append(Proc(pid))
            except NoSuchProcess:
                pass
        return out

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def rss_bytes(self) -> int:
        if self._p is not None:
            return int(self._p.memory_info().rss)
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process(pid: int | None = None) -> Proc:
    return Proc(os.getpid() if pid is None else pid)


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Wait up to ``timeout`` for ``procs`` to end (a child of ours is reaped); -> those left."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if p.is_running()]
    while left:
        for p in left:
            try:  # reap our own children, so they do not linger as zombies
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        left = [p for p in left if p.is_running()]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return left


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def sys_mem_used_bytes() -> int | None:
    if psutil is not None:
        return int(psutil.virtual_memory().used)
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info["MemTotal"] - info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        return None
