"""benchmarks/host_noise.py: the per-core summary's arithmetic, a short live run, bad input."""

import importlib.util
import json
import os
import subprocess
import sys

from demo_run import REPO

SCRIPT = REPO / "benchmarks" / "host_noise.py"
spec = importlib.util.spec_from_file_location("host_noise", SCRIPT)
host_noise = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_noise)


def test_core_row_counts_the_slow_samples_against_the_median():
    row = host_noise.core_row([10.0] * 8 + [12.0, 20.0])
    assert row["samples"] == 10 and row["median_ms"] == 10.0
    assert row["max_over_median"] == 2.0
    assert row["p90_over_median"] == 2.0  # the 90th of 10 sorted: the 10th
    assert row["slow_share"] == 0.1  # 12 is within 1.25x, 20 is not


def test_a_short_run_measures_every_allowed_core(tmp_path):
    out = tmp_path / "noise.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "0.5", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    cores = sorted(os.sched_getaffinity(0))
    assert sorted(int(c) for c in res["cores"]) == cores
    for row in res["cores"].values():
        assert row["samples"] >= 1 and row["median_ms"] > 0
        assert row["max_over_median"] >= 1.0 and 0.0 <= row["slow_share"] <= 1.0
    rounds = len(res["series"]["t_s"])
    assert all(len(xs) == rounds for xs in res["series"]["loop_ms"].values())
    assert all(row["samples"] == rounds for row in res["cores"].values())
    if len(cores) > 1:
        assert res["round_trip_us"]["median"] > 0
    assert "loop CPU ms, median" in p.stdout


def test_bad_duration_is_one_line_and_exit_2():
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "0"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--seconds" in p.stderr
