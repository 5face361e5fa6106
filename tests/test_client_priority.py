"""The vLLM client's loop thread at SCHED_FIFO during a run
(harness.engines.openai_server.priority): the policy really changes inside the block (read back
from the kernel), threads started there run at the normal policy (SCHED_RESET_ON_FORK), the old
policy comes back after, and without the privilege the block runs at normal priority and says
why."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading

import pytest

from harness.engines.openai_server.priority import realtime_thread

MAY_RT = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 1


def _in_thread(fn):
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(fn()))
    t.start()
    t.join()
    return out


def _probe() -> dict:
    before = os.sched_getscheduler(0)
    with realtime_thread() as got:
        inside = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        prio = os.sched_getparam(0).sched_priority
        child = _in_thread(lambda: {"policy": os.sched_getscheduler(0)})["policy"]
    return {
        "got": got,
        "before": before,
        "inside": inside,
        "prio": prio,
        "child": child,
        "after": os.sched_getscheduler(0),
    }


def test_fifo_inside_normal_for_new_threads_and_restored_after():
    r = _in_thread(_probe)
    assert r["before"] == r["after"] == os.SCHED_OTHER
    if MAY_RT:
        assert r["got"] == "SCHED_FIFO 1"
        assert (r["inside"], r["prio"]) == (os.SCHED_FIFO, 1)
    else:
        assert r["got"].startswith("normal (SCHED_FIFO refused")
        assert r["inside"] == os.SCHED_OTHER
    assert r["child"] == os.SCHED_OTHER


@pytest.mark.skipif(
    shutil.which("setpriv") is None, reason="needs util-linux setpriv to drop CAP_SYS_NICE"
)
def test_without_the_privilege_it_runs_normal_and_says_why():
    code = (
        "import os; from harness.engines.openai_server.priority import realtime_thread\n"
        "with realtime_thread() as got: print(got); print(os.sched_getscheduler(0))"
    )
    p = subprocess.run(
        ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    got, policy = p.stdout.splitlines()
    if resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 1:  # the rlimit alone allows priority 1
        assert got == "SCHED_FIFO 1"
    else:
        assert got.startswith("normal (SCHED_FIFO refused: Operation not permitted")
        assert int(policy) == os.SCHED_OTHER
