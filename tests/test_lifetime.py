"""No process of a run outlives its job, and the exit code agrees with summary.json (issue 14).

Real processes and real signals on the CPU demo: the `harness run` launcher killed (SIGKILL) or
hung up on (SIGHUP), the torchrun agent killed, a rank killed. Each case is one demo-sized world,
made long enough (400 requests) to be stopped mid-run; the test watches the run's own processes by
pid (other sessions run harness processes too) and requires every one gone within 30 s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from demo_run import DEMO_CONFIG, REPO
from harness.engines.reference.failures import describe, root_cause
from harness.engines.reference.lifetime import LAUNCHER_ENV
from harness.results.summary import new_summary
from harness.results.writer import RunWriter
from harness.spec.layout import Layout

LONG = ["workload.num_requests=400", "run.timeout_s=300", "run.comm_timeout_s=120"]


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


class World:
    """One `harness run` of the demo, started in its own session; its process tree once serving."""

    def __init__(self, run_dir, env=None):
        cmd = [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(DEMO_CONFIG),
            "--results-dir",
            str(run_dir),
            "--no-report",
        ]
        for o in LONG:
            cmd += ["--set", o]
        self.run_dir = run_dir
        self.launcher = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + 240
        while not (run_dir / "requests.parquet").exists():  # rank 0 flushes once requests complete
            assert self.launcher.poll() is None and time.monotonic() < deadline, self._err()
            time.sleep(0.5)
        me = psutil.Process(self.launcher.pid)
        self.agent = me.children()[0]
        self.ranks = {int(p.environ()["RANK"]): p for p in self.agent.children()}
        self.tree = [self.agent, *self.ranks.values()]
        assert sorted(self.ranks) == list(range(8))

    def _err(self):
        return (
            self.launcher.stderr.read()[-3000:]
            if self.launcher.poll() is not None
            else "still running"
        )

    def all_end_within(self, seconds: float) -> float:
        t0 = time.monotonic()
        _, alive = psutil.wait_procs(self.tree, timeout=seconds)
        assert not alive, f"left running after {seconds} s: {[p.pid for p in alive]}"
        return time.monotonic() - t0

    def close(self):
        for p in (
            [psutil.Process(self.launcher.pid), *self.tree]
            if self.launcher.poll() is None
            else self.tree
        ):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.launcher.wait(timeout=30)


@pytest.fixture
def world(tmp_path):
    made = []

    def start(**kw):
        made.append(World(tmp_path / "run", **kw))
        return made[-1]

    yield start
    for w in made:
        w.close()


@pytest.mark.slow
def test_sigkill_of_the_launcher_ends_every_rank_and_the_run_stays_incomplete(world):
    w = world()
    w.launcher.kill()  # no handler runs; its pid stays a zombie until we reap it below
    w.all_end_within(30)
    w.launcher.wait(timeout=10)
    s = _summary(w.run_dir)
    assert s["complete"] is False and s["verdict"] == "INCOMPLETE"
    assert "launcher" in s["incomplete_reason"] and "died" in s["incomplete_reason"]


@pytest.mark.slow
def test_sighup_of_the_launcher_is_a_stop_like_sigterm(world):
    w = world()
    w.launcher.send_signal(signal.SIGHUP)
    assert w.launcher.wait(timeout=60) == 3
    w.all_end_within(30)
    s = _summary(w.run_dir)
    assert s["complete"] is False and s["incomplete_reason"] == "received SIGHUP"
    assert 0 < s["metrics"]["completed"] < 400


@pytest.mark.slow
def test_sigkill_of_the_agent_ends_the_ranks_and_the_exit_code_agrees(world):
    w = world()
    w.agent.kill()
    rc = w.launcher.wait(timeout=60)  # the launcher waits for the ranks before it judges
    assert [
        p for p in w.ranks.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ] == []
    assert rc == 3
    s = _summary(w.run_dir)
    assert (
        s["complete"] is False
        and s["incomplete_reason"] == "the torchrun agent was killed by SIGKILL"
    )
    time.sleep(2)
    assert _summary(w.run_dir) == s  # nothing rewrote it afterwards


@pytest.mark.slow
def test_a_killed_rank_is_named_with_its_stage_and_signal(world):
    w = world()
    w.ranks[5].kill()
    assert w.launcher.wait(timeout=90) == 3
    w.all_end_within(30)
    s = _summary(w.run_dir)
    assert s["complete"] is False
    assert s["incomplete_reason"] == "rank 5 (dp 0, stage 2, tp 1) was killed by SIGKILL"
    assert {k: s["failure"][k] for k in ("rank", "dp", "stage", "tp", "kind", "signal")} == {
        "rank": 5,
        "dp": 0,
        "stage": 2,
        "tp": 1,
        "kind": "signal",
        "signal": "SIGKILL",
    }


# ---------------------------------------------------------------- the same rules, without a world

LAYOUT = Layout(2, 4, 1, (2, 2, 2, 2))


def test_root_cause_prefers_a_ranks_own_error_then_a_signal_over_peer_errors():
    peer = {
        "rank": 0,
        "exception": "RuntimeError",
        "message": "Connection closed by peer",
        "peer": True,
        "t": 1.0,
    }
    own = {"rank": 5, "exception": "ValueError", "message": "bad", "peer": False, "t": 2.0}
    cause = root_cause(LAYOUT, {0: peer, 5: own}, {0: {"exitcode": 1}, 5: {"exitcode": 1}})
    assert describe(cause) == "rank 5 (dp 0, stage 2, tp 1) failed: ValueError: bad"
    killed = {
        3: {"exitcode": -9, "signal": "SIGKILL"},
        0: {"exitcode": 1},
        1: {"exitcode": -15, "signal": "SIGTERM"},
    }
    assert (
        describe(root_cause(LAYOUT, {0: peer}, killed))
        == "rank 3 (dp 0, stage 1, tp 1) was killed by SIGKILL"
    )
    # all stopped on request
    assert root_cause(LAYOUT, {}, {r: {"exitcode": 3} for r in range(8)}) is None
    assert (
        describe(root_cause(LAYOUT, {}, {6: {"exitcode": 7}}))
        == "rank 6 (dp 0, stage 3, tp 0) exited with code 7"
    )
    assert describe(root_cause(LAYOUT, {0: peer}, {})).startswith(
        "rank 0 (dp 0, stage 0, tp 0) failed: RuntimeError"
    )


def _writer(tmp_path):
    return RunWriter(tmp_path / "run"), new_summary(
        "t", {}, {"tp": 1, "pp": 1, "dp": 1, "layer_split": [1]}
    )


def test_after_a_stop_no_write_makes_the_run_complete(tmp_path):
    w, summary = _writer(tmp_path)
    w.start({}, {}, summary)
    w.write_partial({"incomplete_reason": "the harness run launcher (pid 1) died"}, [])
    w.write_final({"complete": True, "slo": []}, {})
    s = _summary(w.dir)
    assert (
        s["complete"] is False and s["incomplete_reason"] == "the harness run launcher (pid 1) died"
    )
    w2, summary = _writer(tmp_path / "b")
    w2.start({}, {}, summary)
    w2.stop_check = lambda: "its torchrun agent (pid 2) died"  # what StopGuard.check says then
    w2.write_final({"complete": True, "slo": []}, {})
    assert _summary(w2.dir)["incomplete_reason"] == "its torchrun agent (pid 2) died"


WATCHER = """
import sys
from harness.engines.reference.lifetime import Lifeline
life = Lifeline()
print(life.lost(), flush=True)
sys.stdin.readline()
print(life.lost(), flush=True)
"""


def test_a_zombie_launcher_counts_as_dead():
    """A SIGKILLed launcher stays a zombie until its parent reaps it: the rank's Lifeline (in a
    process started after the launcher, as ranks are) must call it dead all the same."""
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    env = dict(os.environ, **{LAUNCHER_ENV: f"{socket.gethostname()}:{launcher.pid}"})
    env.pop("HARNESS_AGENT_PID", None)
    rank = subprocess.Popen(
        [sys.executable, "-c", WATCHER],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert rank.stdout.readline().strip() == "None"
        launcher.kill()
        time.sleep(0.5)  # not reaped: a zombie with the same pid
        assert psutil.Process(launcher.pid).status() == psutil.STATUS_ZOMBIE
        out, _ = rank.communicate("go\n", timeout=30)
        assert out.strip() == f"the harness run launcher (pid {launcher.pid}) died"
    finally:
        launcher.kill()
        launcher.wait()
        rank.kill()


def test_an_agent_failing_after_a_complete_summary_leaves_the_run_incomplete(tmp_path, capsys):
    """The exit code is read from summary.json, and the launcher never leaves `complete: true` for a
    world whose agent failed (here: exit 1 after rank 0 wrote the results, e.g. a crash at
    teardown)."""
    from harness.commands.run_exit import exit_code
    from harness.engines.reference.launcher import settle
    from harness.spec.spec import load_spec

    spec = load_spec(DEMO_CONFIG)
    w, summary = _writer(tmp_path)
    w.start({}, {}, summary)
    w.write_final(
        {
            "complete": True,
            "slo": [{"target": "t", "measured": 1.0, "passed": True, "margin_pct": 1.0}],
        },
        {},
    )
    assert _summary(w.dir)["verdict"] == "PASS"
    (tmp_path / "failures").mkdir()
    settle(spec, w.dir, 1, tmp_path / "failures")
    s = _summary(w.dir)
    assert (s["complete"], s["verdict"]) == (False, "INCOMPLETE")
    assert (
        s["incomplete_reason"]
        == "the torchrun agent exited with code 1 after rank 0 wrote the results"
    )
    assert exit_code(w.dir, 1) == 3
    settle(spec, w.dir, 0, tmp_path / "failures")  # a clean world changes nothing
    assert _summary(w.dir) == s
