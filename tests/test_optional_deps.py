"""The GPU machines have no accelerate, no psutil and no scipy (issue 26, finding 6): the package
imports without them, each place that used them degrades (accelerate's weight count is skipped and
the summary says so; /proc stands in for psutil; mpmath and numpy for scipy's special functions and
bootstrap, harness.measure.special), and a real run completes with all three hidden.

Hidden means absent to the import system: a ``sitecustomize`` on ``PYTHONPATH`` sets
``sys.modules[name] = None`` in every Python process of the run (the launcher, torchrun's agent,
every rank), so ``import name`` raises ImportError and ``importlib.util.find_spec`` finds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo_run import assert_verdict_exit, harness_run

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("accelerate", "psutil", "scipy")


def _hiding_env(tmp_path: Path) -> dict:
    shim = tmp_path / "hide"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in HIDDEN)
    )
    path = os.pathsep.join(p for p in (str(shim), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


PROBE = r"""
import importlib, json, os, pkgutil, subprocess, sys, time
for name in ("accelerate", "psutil", "scipy"):
    try:
        __import__(name)
        raise SystemExit(f"{name} was not hidden")
    except ImportError:
        pass
import harness
# not __main__ (it runs the CLI), not the vLLM engine: it serves on a machine with vLLM, which
# depends on psutil (its server-tree telemetry uses it)
modules = [m.name for m in pkgutil.walk_packages(harness.__path__, "harness.")
           if not m.name.endswith("__main__") and not m.name.startswith("harness.engines.vllm")]
for m in modules:
    importlib.import_module(m)
from harness.engines.reference import lifetime
from harness.engines.reference.model.accounting import have_accelerate, meta_rank_bytes
from harness.errors import UsageError
from harness.measure import host
from harness.measure.nvml import NvmlSampler, torch_memory_stats
from harness.spec.catalog import MODEL_PRESETS
from harness.spec.layout import Layout
try:
    meta_rank_bytes(MODEL_PRESETS["tiny"], Layout(1, 1, 1, (2,)), 0, "fp32")
    refused = None
except UsageError as e:
    refused = str(e)
with NvmlSampler(interval_s=0.05, uuids=[]) as s:
    sum(i * i for i in range(2_000_000))
rows = s.rows()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
kids = lifetime.descendants(os.getpid())
alive_before = lifetime.alive(child.pid)
killed = lifetime.reap(kids, 0.2)
print(json.dumps({
    "psutil": host.psutil is not None,
    "have_accelerate": have_accelerate(),
    "refused": refused,
    "modules": len(modules),
    "rss": torch_memory_stats("cpu")["rss_bytes"],
    "rows": len(rows),
    "row_rss": min(r["rss_bytes"] for r in rows),
    "row_cpu": max(r["cpu_pct"] for r in rows),
    "row_mem": min(r["sys_mem_used_bytes"] for r in rows),
    "kids": [k.pid for k in kids],
    "child": child.pid,
    "alive_before": alive_before,
    "killed": killed,
    "alive_after": lifetime.alive(child.pid),
    "me_alive": lifetime.alive(os.getpid(), born_before=time.time()),
    "lifeline": lifetime.Lifeline().lost(),
}))
"""


def test_package_imports_and_degrades_without_accelerate_and_psutil(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=_hiding_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["psutil"] is False and got["have_accelerate"] is False
    assert got["refused"].startswith("--check-weights: accelerate is not installed")
    assert got["modules"] > 100  # every module of the package imported
    # /proc in psutil's place: this process's memory, CPU time and the host's memory in use
    assert got["rss"] > 50 * 2**20 and got["row_rss"] > 50 * 2**20
    assert got["rows"] >= 2 and got["row_cpu"] > 10 and got["row_mem"] > 0
    # the lifelines: a child found, alive, then killed by reap
    assert got["kids"] == [got["child"]] and got["alive_before"]
    assert got["killed"] == [got["child"]] and not got["alive_after"]
    assert got["me_alive"] and got["lifeline"] is None


@pytest.mark.slow
def test_a_run_completes_without_accelerate_and_psutil(tmp_path):
    """The real launcher, torchrun agent and two ranks (TP1-PP2) on the CPU, both packages
    hidden in every process: the run completes, its cross-checks hold, and the summary says the
    accelerate count was skipped (a run on the GPU machine used to fail before serving)."""
    res = harness_run(
        tmp_path / "run",
        "parallel.tp=1",
        "parallel.pp=2",
        "cluster.gpus_per_node=2",
        "workload.num_requests=4",
        "run.warmup_requests=1",
        env=_hiding_env(tmp_path),
        timeout=240,
    )
    s = assert_verdict_exit(res.returncode, res.run_dir, res.stderr)
    checks = s["cross_checks"]
    assert checks and all(c["ok"] for c in checks)
    assert not [c for c in checks if "(accelerate)" in c["name"]]
    assert any("accelerate is not installed" in n for n in s["notes"])
