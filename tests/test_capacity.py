import pytest

from harness.verdicts.capacity import capacity, next_probe


def _search(x0, limit, integer=False, max_probes=12):
    """Drive the search against a system whose true capacity is ``limit``."""
    hist = []
    while (x := next_probe(hist, x0, integer=integer, max_probes=max_probes)) is not None:
        hist.append((x, x <= limit))
    return hist


def test_doubling_then_bisection_by_hand():
    hist = _search(1.0, 5.3)
    assert [x for x, _ in hist[:4]] == [1.0, 2.0, 4.0, 8.0]  # doubling until 8 fails
    assert [x for x, _ in hist[4:6]] == [6.0, 5.0]  # bisection 4..8, then 4..6 -> 5
    assert 5.0 <= capacity(hist) <= 5.3 and len(hist) <= 12


def test_descends_when_the_first_probe_fails():
    hist = _search(16.0, 3.0)
    assert [x for x, _ in hist[:4]] == [16.0, 8.0, 4.0, 2.0]
    assert 2.0 <= capacity(hist) <= 3.0


def test_integer_concurrency_and_probe_budget():
    hist = _search(4, 13, integer=True)
    assert capacity(hist) == 13 and all(float(x).is_integer() for x, _ in hist)
    assert len(_search(1.0, 1e9, max_probes=3)) == 3
    assert capacity([(1.0, False)]) is None


def _workload(rate=4.0):
    from types import SimpleNamespace

    return SimpleNamespace(arrival="poisson", rate_rps=rate, concurrency=None)


def test_the_driver_makes_one_row_per_probe_and_ends_on_a_failed_or_refused_probe():
    """verdicts.capacity.search with a probe whose system has a capacity of 11 req/s."""
    from harness.verdicts.capacity import ProbeRefused, ProbeResult, search

    seen, docs = [], []

    def probe(rate):
        seen.append(rate)
        ok = rate <= 11
        return ProbeResult(
            "PASS" if ok else "FAIL", {"request_throughput": rate}, extra={"run_dir": f"r{rate}"}
        )

    doc = search(_workload(), probe, 6, on_probe=lambda d: docs.append(d["capacity"]))
    assert seen == [4.0, 8.0, 16.0, 12.0, 10.0, 11.0]
    assert doc["done"] and doc["capacity"] == 11.0 and doc["field"] == "workload.rate_rps"
    assert docs == [4.0, 8.0, 8.0, 8.0, 10.0, 11.0]  # capacity.json after each probe
    row = doc["probes"][2]
    assert row == {
        "probe": 2,
        "workload.rate_rps": 16.0,
        "verdict": "FAIL",
        "request_throughput": 16.0,
        "request_goodput": None,
        "p99_ttft_ms": None,
        "p99_tpot_ms": None,
        "slo": [],
        "failed": False,
        "run_dir": "r16.0",
    }

    def failing(rate):
        if rate > 8:
            return ProbeResult("INCOMPLETE", failed=True, reason="run.timeout_s=1 s exceeded")
        return probe(rate)

    doc = search(_workload(), failing, 6)
    assert not doc["done"] and doc["capacity"] == 8.0 and len(doc["probes"]) == 3
    assert doc["probes"][-1]["verdict"] == "INCOMPLETE" and doc["probes"][-1]["failed"]
    assert doc["stopped"] == "probe workload.rate_rps=16.0 failed: run.timeout_s=1 s exceeded"

    def refused(rate):
        if rate > 8:
            raise ProbeRefused("workload.rate_rps: 16 is above the limit 10")
        return probe(rate)

    doc = search(_workload(), refused, 6)
    assert doc["done"] and doc["capacity"] == 8.0 and len(doc["probes"]) == 2
    assert doc["stopped"].startswith("probe workload.rate_rps=16.0: workload.rate_rps: 16")


def test_find_capacity_records_every_probe(tmp_path, monkeypatch, capsys):
    """The --find-capacity verb through the engine registry, with the reference engine's runs
    replaced by a stand-in system whose capacity is 11 req/s (each run writes its summary.json)."""
    import dataclasses
    import json
    from contextlib import nullcontext

    from harness.cli import main
    from harness.engines import registry

    seen = []

    def fake_serve(spec, options):
        rate = spec.workload.rate_rps
        seen.append(rate)
        options.results_dir.mkdir(parents=True)
        ok = rate <= 11
        (options.results_dir / "summary.json").write_text(
            json.dumps(
                {
                    "complete": True,
                    "verdict": "PASS" if ok else "FAIL",
                    "slo": [],
                    "metrics": {"request_throughput": rate},
                }
            )
        )
        return 0

    stand_in = dataclasses.replace(
        registry.ENGINES["reference"], probes=lambda spec, options: nullcontext(fake_serve)
    )
    monkeypatch.setitem(registry.ENGINES, "reference", stand_in)
    out = tmp_path / "cap"
    from demo_run import DEMO_CONFIG

    rc = main(
        ["run", str(DEMO_CONFIG), "--find-capacity", "--probes", "6", "--results-dir", str(out)]
    )
    assert rc == 0
    assert seen == [4.0, 8.0, 16.0, 12.0, 10.0, 11.0]
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["done"] and doc["capacity"] == 11.0 and len(doc["probes"]) == 6
    assert [p["verdict"] for p in doc["probes"]] == ["PASS", "PASS", "FAIL", "FAIL", "PASS", "PASS"]
    assert [p["exit_code"] for p in doc["probes"]] == [0, 0, 1, 1, 0, 0]
    assert doc["probes"][5]["run_dir"] == str(out / "probe-05")
    assert "capacity: workload.rate_rps = 11.0" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_probe_is_recorded_and_ends_the_search_with_exit_3(tmp_path):
    """A real probe that times out (run.timeout_s=1): capacity.json names it failed, with its
    reason, and the search stops there with exit 3 (not 2: the input was fine)."""
    import json
    import subprocess
    import sys

    from demo_run import DEMO_CONFIG, REPO

    out = tmp_path / "cap"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(DEMO_CONFIG),
            "--find-capacity",
            "--probes",
            "4",
            "--results-dir",
            str(out),
            "--set",
            "run.timeout_s=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 3, p.stderr[-3000:]
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["done"] is False and doc["capacity"] is None and len(doc["probes"]) == 1
    probe = doc["probes"][0]
    assert probe["failed"] is True and probe["verdict"] == "INCOMPLETE" and probe["exit_code"] == 3
    assert probe["reason"] == "run.timeout_s=1 s exceeded" and probe["workload.rate_rps"] == 4.0
    assert "probe workload.rate_rps=4.0 failed (run.timeout_s=1 s exceeded)" in p.stderr
