"""launch/gpu_check.sh on a machine like the lent GPU one (issue 26): a first step that imports
everything the check needs and names what is missing, every other step run when its modules are
there; the peaks line says "fastest of N" (what Peaks measures); and a CUDA-graph capture that
fails with any exception degrades the point to eager timing instead of ending the sweep."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _launch_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deps_names_what_is_missing_and_needs_gates_on_it(tmp_path, monkeypatch, capsys):
    deps = _launch_module("gpu_deps")
    for name in ("accelerate", "psutil", "pytest_timeout", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "deps.json"
    assert deps.main(["deps", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["missing"]) == {"pandas"}
    assert set(got["optional_missing"]) >= {"accelerate", "psutil", "pytest_timeout"}
    assert got["present"]["torch"] == importlib.metadata.version("torch")
    printed = capsys.readouterr().out
    assert "MISSING   pandas: pandas (run (tables))" in printed
    assert "optional  psutil: psutil (/proc stands in" in printed
    assert deps.main(["needs", str(out), "torch", "yaml"]) == 0
    assert deps.main(["needs", str(out), "torch", "pandas"]) == 1
    assert capsys.readouterr().out.strip() == "missing: pandas"
    assert deps.main(["needs", str(tmp_path / "absent.json"), "pandas"]) == 0  # no deps step


@pytest.mark.slow
def test_gpu_check_runs_without_accelerate_psutil_and_pytest_timeout(tmp_path):
    """The whole check on this CPU machine with the three packages the GPU machine lacks hidden
    from every process: the deps step names them, every step runs, the check exits 0."""
    shim = tmp_path / "hide"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        + "".join(
            f"sys.modules[{n!r}] = None\n" for n in ("accelerate", "psutil", "pytest_timeout")
        )
    )
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(shim))
    proc = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), str(tmp_path / "gc")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    steps = {s["name"]: s["status"] for s in data["steps"]}
    assert steps["deps"] == steps["versions"] == steps["emulate-tiny"] == "ok"
    assert set(data["deps"]["optional_missing"]) >= {"accelerate", "psutil", "pytest_timeout"}
    assert not data["deps"]["missing"]
    assert "missing modules" in proc.stdout and "pytest_timeout" in proc.stdout


def test_peaks_line_says_fastest_of_n(monkeypatch, capsys, tmp_path):
    from harness import emulate
    from harness.emulate import Peaks

    check = _launch_module("gpu_check")
    monkeypatch.setattr(
        emulate,
        "measure_peaks",
        lambda *a, **k: Peaks("GPU", 3000.0, 2**31, 900.0, 8192, "bfloat16", 20),
    )
    assert check.peaks(str(tmp_path / "p.json")) == 0
    line = capsys.readouterr().out
    assert "each the fastest of 20" in line and "median" not in line


@pytest.mark.parametrize(
    "error", [RuntimeError("capture"), AssertionError("pool"), TypeError("wrapper"), ValueError()]
)
def test_a_failed_graph_capture_of_any_kind_times_the_eager_step(monkeypatch, error):
    from harness.emulate import step as step_mod

    def fail(*a):
        raise error

    monkeypatch.setattr(step_mod, "capture_graph", fail)
    eager = object()
    run, mode, capture_s, note = step_mod.capture_or_eager(None, torch.device("cuda"), eager)
    assert run is eager and mode == "eager" and capture_s is None
    assert note.startswith(f"graph capture failed, timed eagerly: {type(error).__name__}")
