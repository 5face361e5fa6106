"""The CPU demo run, once per test session, shared by every test that needs a real run directory.

It is the README's main command (tiny Llama, TP2-PP4, 8 gloo ranks) with ``run.record_tokens`` on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"


def torchrun(nproc: int, script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """A standalone torchrun world of ``nproc`` CPU ranks (one OpenMP thread each: 2 cores) running
    ``script`` from the repository root; its exit must be 0."""
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        + [f"--nproc-per-node={nproc}", str(script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@dataclass
class RunResult:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str
    wall_s: float


def harness_run(
    run_dir: Path,
    *overrides: str,
    config: Path = DEMO_CONFIG,
    env: dict | None = None,
    timeout: float = 240,
    flags: tuple[str, ...] = (),
    report: bool = False,
) -> RunResult:
    """``report=False``: ``--no-report`` (rendering costs ~3-6 s a run; the tests that read a run's
    own report ask for it)."""
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(config),
        "--results-dir",
        str(run_dir),
        *flags,
    ]
    if not report:
        cmd.append("--no-report")
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return RunResult(run_dir, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def assert_verdict_exit(returncode: int, run_dir: Path, stderr: str = "") -> dict:
    """A complete run's exit code agrees with the verdict in its ``summary.json`` (PASS 0, FAIL or
    UNMEASURED 1, INCONCLUSIVE 4); returns the summary."""
    import json

    from harness.commands.run_exit import verdict_exit_code

    summary_file = run_dir / "summary.json"
    assert summary_file.exists(), f"no summary (exit {returncode}):\n{stderr[-4000:]}"
    summary = json.loads(summary_file.read_text())
    assert summary["complete"] is True, (summary.get("incomplete_reason"), stderr[-4000:])
    want = verdict_exit_code(summary.get("verdict"))
    assert returncode == want, (
        f"exit {returncode}, verdict {summary.get('verdict')} wants {want}:\n{stderr[-4000:]}"
    )
    return summary


_DEMO: dict[str, RunResult] = {}


def demo(tmp_path_factory) -> RunResult:
    """The demo run, made on first use and shared by every test module of the session."""
    if "run" not in _DEMO:
        res = harness_run(tmp_path_factory.mktemp("demo") / "run", "run.record_tokens=true")
        assert_verdict_exit(res.returncode, res.run_dir, res.stderr)
        _DEMO["run"] = res
    return _DEMO["run"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> RunResult:
    return demo(tmp_path_factory)
