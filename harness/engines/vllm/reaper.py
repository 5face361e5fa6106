"""The server's keeper: ``python -m harness.engines.vllm.reaper``, a small process that starts the
vLLM server and guarantees its whole process tree ends when ``harness run`` ends, however it ends.

Why a separate process: ``harness run`` may die by SIGKILL, and vLLM's own shutdown then never
runs (a SIGKILLed API server orphans its EngineCore and workers, measured). The reaper lives in
its own session, outside the server's process group (a signal to either group does not reach the
other), ignores SIGINT/SIGHUP, and reads its stdin, a pipe whose only writer is ``harness run``:
the kernel closes that pipe when ``harness run`` dies, so EOF on stdin means "stop the server" as
surely as the explicit ``stop`` line. It is also the child subreaper of the server's tree, so
orphans come back to it to be collected. No PR_SET_PDEATHSIG on the server: it fires on the death
of the spawning *thread*, and vLLM's shutdown on SIGTERM hangs while a stream is open.

Protocol (JSON lines): stdin line 1 ``{"argv", "env" (the whole environment), "log", "cwd",
"grace_s"}``; then ``stop`` or EOF. stdout: ``{"pid": P}`` once the server started (or ``{"error":
...}``), ``{"exit": RC}`` when the server process exits by itself, ``{"stopped": {...}}`` when its
session is empty and the leftovers are removed; then the reaper exits.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import threading

from harness.engines.vllm.tree import (
    leftover_names,
    paths_used,
    remove_new_leftovers,
    session_members,
    stop_session,
)

PR_SET_CHILD_SUBREAPER = 36
_out_lock = threading.Lock()


def emit(obj: dict) -> None:
    with _out_lock:
        try:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # harness run is gone; the stop still happens


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, the session scan still finds them


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stop_now = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_now.set())
    _become_subreaper()
    first = sys.stdin.readline()
    if not first:
        return 0  # harness run died before asking for a server
    req = json.loads(first)
    before = leftover_names()
    try:
        with open(req["log"], "ab") as log:
            proc = subprocess.Popen(
                req["argv"],
                env=req["env"],
                cwd=req.get("cwd"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as e:
        emit({"error": f"{type(e).__name__}: {e}"})
        return 1
    emit({"pid": proc.pid})

    def watch() -> None:
        emit({"exit": proc.wait()})

    threading.Thread(target=watch, daemon=True).start()

    def read_stdin() -> None:
        while True:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                break
        stop_now.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    owned: set[str] = set()  # what the server's processes were seen using: only that is removed

    def sample() -> None:
        owned.update(paths_used([pid for pid, _ in session_members(proc.pid)]))

    while not stop_now.wait(1.0):
        sample()
    sample()
    result = stop_session(proc.pid, float(req.get("grace_s", 15.0)), skip_reap=proc.pid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    result["exit_code"] = proc.returncode
    result["removed"] = remove_new_leftovers(before, owned)
    emit({"stopped": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
