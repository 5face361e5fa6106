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


def test_find_capacity_records_every_probe(tmp_path, monkeypatch, capsys):
    """The --find-capacity loop with each run replaced by a stand-in whose capacity is 11 req/s."""
    import json

    import harness.commands.run as run_cmd
    from harness.cli import main

    seen = []

    def fake_launch(spec, args):
        rate = spec.workload.rate_rps
        seen.append(rate)
        d = __import__("pathlib").Path(args.results_dir)
        d.mkdir(parents=True)
        ok = rate <= 11
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "complete": True,
                    "verdict": "PASS" if ok else "FAIL",
                    "slo": [],
                    "metrics": {"request_throughput": rate},
                }
            )
        )
        return 0 if ok else 1

    monkeypatch.setattr(run_cmd, "launch", fake_launch)
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
    assert "capacity: workload.rate_rps = 11.0" in capsys.readouterr().out


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
