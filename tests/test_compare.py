"""harness compare / history: direction-aware regression verdicts, exit codes, bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.cli import main as cli
from harness.errors import UsageError
from harness.verdicts.compare import compare_dirs, delta_pct, judge
from harness.verdicts.history import collect_history
from run_fixtures import SynthRun, build_synthetic_run

SMALL = dict(steps=12, with_nvml=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    base = build_synthetic_run(root / "base", SynthRun(**SMALL))
    # every latency +10 %
    slower = build_synthetic_run(root / "slower", SynthRun(latency_scale=1.10, **SMALL))
    faster = build_synthetic_run(root / "faster", SynthRun(latency_scale=0.80, **SMALL))
    return root, base, slower, faster


def test_delta_and_direction_aware_verdicts():
    assert delta_pct(100.0, 110.0) == pytest.approx(10.0)
    assert (
        delta_pct(0.0, 0.0) == 0.0 and delta_pct(0.0, 1.0) is None and delta_pct(None, 1.0) is None
    )
    assert judge("lower", 10.0, 5.0) == "regression" and judge("lower", -10.0, 5.0) == "improved"
    assert judge("higher", -10.0, 5.0) == "regression" and judge("higher", 10.0, 5.0) == "improved"
    assert judge("lower", 4.9, 5.0) == "same" and judge("higher", None, 5.0) == "n/a"
    assert judge("info", 50.0, 5.0) == "info"


def test_unchanged_run_passes(runs, capsys):
    _, base, _, _ = runs
    cmp = compare_dirs(base, base)
    assert cmp.verdict == "OK" and not cmp.regressions
    assert {r.verdict for r in cmp.rows} <= {"same", "info"}
    assert cli(["compare", str(base), str(base)]) == 0
    assert "# Compare: OK" in capsys.readouterr().out


def test_ten_percent_latency_regression_is_flagged(runs, capsys):
    _, base, slower, _ = runs
    cmp = compare_dirs(base, slower, threshold_pct=5.0)
    bad = {r.key: r for r in cmp.regressions}
    for key in ("p99_ttft_ms", "mean_tpot_ms", "p99_e2el_ms"):
        assert key in bad
        assert bad[key].delta_pct == pytest.approx(10.0, abs=0.01)
        assert bad[key].new == pytest.approx(bad[key].base * 1.10)
    assert "request_throughput" not in bad  # the same arrivals: throughput barely moves
    assert cli(["compare", str(base), str(slower), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "REGRESSION" and "p99_ttft_ms" in out["regressions"]
    # a threshold above the change: no regression
    assert cli(["compare", str(base), str(slower), "--threshold", "12"]) == 0


def test_better_latency_is_improved_not_a_regression(runs):
    _, base, _, faster = runs
    cmp = compare_dirs(base, faster)
    assert not cmp.regressions
    assert {r.key for r in cmp.rows if r.verdict == "improved"} >= {"p99_ttft_ms", "mean_tpot_ms"}


def test_throughput_drop_is_a_regression(tmp_path, runs):
    _, base, _, _ = runs
    slow = build_synthetic_run(tmp_path / "lowrate", SynthRun(throughput_scale=0.8, **SMALL))
    cmp = compare_dirs(base, slow)
    assert "request_throughput" in {r.key for r in cmp.regressions}


def test_different_layout_needs_force(tmp_path, runs, capsys):
    _, base, _, _ = runs
    other = build_synthetic_run(tmp_path / "tp1", SynthRun(tp=1, pp=8, **SMALL))
    with pytest.raises(UsageError, match=r"layout differs: BASE \(2, 4, 1.*--force"):
        compare_dirs(base, other)
    assert cli(["compare", str(base), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layout differs" in err
    cmp = compare_dirs(base, other, force=True)
    assert any("layout differs" in w for w in cmp.warnings)


def test_different_model_or_incomplete_run_is_bad_input(tmp_path, runs):
    _, base, _, _ = runs
    d = tmp_path / "other_model"
    shutil.copytree(base, d)
    spec = (d / "spec.yaml").read_text().replace("preset: tiny", "preset: llama3-8b")
    (d / "spec.yaml").write_text(spec)
    with pytest.raises(UsageError, match="model differs"):
        compare_dirs(base, d)
    inc = build_synthetic_run(tmp_path / "inc", SynthRun(complete=False, **SMALL))
    with pytest.raises(UsageError, match="NEW .* is incomplete \\(received SIGTERM\\)"):
        compare_dirs(base, inc)
    assert compare_dirs(base, inc, force=True).warnings


def test_unreadable_dir_exits_2(tmp_path, runs, capsys):
    _, base, _, _ = runs
    assert cli(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_history_table_csv_parquet_and_plot(tmp_path, runs, capsys):
    import pandas as pd

    root, base, slower, faster = runs
    hist = tmp_path / "hist"
    hist.mkdir()
    for i, src in enumerate((slower, base, faster)):
        d = hist / f"nightly-{i}"
        shutil.copytree(src, d)
        s = json.loads((d / "summary.json").read_text())
        s["started_utc"] = f"2025-01-0{3 - i}T00:00:00Z"  # oldest last on disk, first in the table
        (d / "summary.json").write_text(json.dumps(s))
    (hist / "broken").mkdir()
    (hist / "broken" / "summary.json").write_text("{")
    rows, skipped = collect_history(hist)
    assert [r["run_dir"].rsplit("/", 1)[1] for r in rows] == ["nightly-2", "nightly-1", "nightly-0"]
    assert len(skipped) == 1 and "is not valid JSON" in skipped[0]
    out = tmp_path / "report" / "history.md"
    assert cli(["history", str(hist), "--out", str(out)]) == 0
    assert "# History: 3 run(s)" in out.read_text()
    df = pd.read_csv(out.with_suffix(".csv"))
    assert len(df) == 3 and df["p99_ttft_ms"].iloc[2] == pytest.approx(rows[2]["p99_ttft_ms"])
    assert len(pd.read_parquet(out.with_suffix(".parquet"))) == 3
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    capsys.readouterr()
    assert cli(["history", str(tmp_path / "nothing")]) == 2
    (tmp_path / "emptydir").mkdir()
    assert cli(["history", str(tmp_path / "emptydir")]) == 2
    assert "no readable run directory" in capsys.readouterr().err
