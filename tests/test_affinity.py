"""run.cpu_affinity: which core each rank gets, and every thread of a pinned process on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from demo_run import DEMO_CONFIG, REPO
from harness.engines.reference.affinity import apply, core_for
from harness.spec.spec import load_spec


def test_cores_by_mode_on_two_and_on_sixteen_cores_and_in_a_cpuset():
    assert [core_for("none", i, [0, 1]) for i in range(8)] == [None] * 8
    # TP2 innermost: TP peers (consecutive local ranks) on different cores
    assert [core_for("rank", i, [0, 1]) for i in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [core_for("rank", i, list(range(16))) for i in range(8)] == list(range(8))
    # the cores are the ones the process may use (a cpuset of 2, 5, 7), in order
    assert [core_for("rank", i, [2, 5, 7]) for i in range(4)] == [2, 5, 7, 2]


def test_a_pinned_process_has_every_thread_on_its_core():
    """A thread started before the pin (as gloo's are) and one after both run on the core."""
    allowed = sorted(os.sched_getaffinity(0))
    code = """
import json, os, threading
from harness.engines.reference.affinity import apply
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
core, note = apply("rank", 1, cuda=False)
after = threading.Thread(target=stop.wait); after.start()
tids = [int(t) for t in os.listdir("/proc/self/task")]
print(json.dumps({"core": core, "note": note,
                  "threads": [sorted(os.sched_getaffinity(t)) for t in tids]}))
stop.set()
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    want = allowed[1 % len(allowed)]
    assert got["core"] == want and got["note"] is None
    assert len(got["threads"]) == 3 and all(t == [want] for t in got["threads"])


def test_none_does_nothing_and_cuda_ranks_are_noted_not_pinned():
    assert apply("none", 3, cuda=False) == (None, None)
    core, note = apply("rank", 3, cuda=True)
    assert core is None and note.startswith("run.cpu_affinity: rank applies to CPU ranks only")


def test_the_spec_takes_both_modes_and_names_the_field_otherwise():
    assert load_spec(DEMO_CONFIG).run.cpu_affinity == "none"
    assert load_spec(DEMO_CONFIG, ["run.cpu_affinity=rank"]).run.cpu_affinity == "rank"
    p = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", str(DEMO_CONFIG)]
        + ["--set", "run.cpu_affinity=tp_group"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "harness plan: error: run.cpu_affinity: 'tp_group' is not allowed; use one of none, rank"
    ]
