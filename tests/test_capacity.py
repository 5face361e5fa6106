from harness.verdicts.capacity import capacity, next_probe


def _search(x0, limit, integer=False, max_probes=12):
    """Drive the search against a system whose true capacity is ``limit``."""
    hist = []
    while (x := next_probe(hist, x0, integer=integer, max_probes=max_probes)) is not None:
        hist.append((x, x <= limit))
    return hist


def test_doubling_then_bisection_by_hand():
    hist = _search(1.0, 5.3)
    assert [x for x, _ in hist[:4]] == [1.0, 2.0, 4.0, 8.0]          # doubling until 8 fails
    assert [x for x, _ in hist[4:6]] == [6.0, 5.0]                    # bisection 4..8, then 4..6 -> 5
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
        (d / "summary.json").write_text(json.dumps({"complete": True, "verdict": "PASS" if ok else "FAIL",
                                                     "slo": [], "metrics": {"request_throughput": rate}}))
        return 0 if ok else 1

    monkeypatch.setattr(run_cmd, "launch", fake_launch)
    out = tmp_path / "cap"
    from demo_run import DEMO_CONFIG
    rc = main(["run", str(DEMO_CONFIG), "--find-capacity", "--probes", "6", "--results-dir", str(out)])
    assert rc == 0
    assert seen == [4.0, 8.0, 16.0, 12.0, 10.0, 11.0]
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["done"] and doc["capacity"] == 11.0 and len(doc["probes"]) == 6
    assert [p["verdict"] for p in doc["probes"]] == ["PASS", "PASS", "FAIL", "FAIL", "PASS", "PASS"]
    assert "capacity: workload.rate_rps = 11.0" in capsys.readouterr().out
