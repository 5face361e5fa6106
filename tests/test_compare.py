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
    assert cmp.verdict == "OK" and not cmp.regressions and not cmp.suspects
    rows = {r.key: r for r in cmp.rows}
    assert all(r.delta_pct == 0 for r in cmp.rows if r.verdict != "info")
    # TPOT barely varies: its mean is the same within ±5 % with confidence; 24 requests bound the
    # median TTFT both ways but wider than ±5 %, and a p99 of 24 requests has no upper bound:
    # inconclusive (never "same")
    assert rows["mean_tpot_ms"].verdict == "same"
    assert -5 < rows["mean_tpot_ms"].low_pct < 0 < rows["mean_tpot_ms"].high_pct < 5
    assert rows["median_ttft_ms"].verdict == "inconclusive"
    assert rows["median_ttft_ms"].low_pct < -5 and rows["median_ttft_ms"].high_pct > 5
    assert rows["p99_ttft_ms"].verdict == "inconclusive" and rows["p99_ttft_ms"].high_pct is None
    assert cli(["compare", str(base), str(base)]) == 0
    out = capsys.readouterr().out
    assert "# Compare: OK" in out and "| TTFT p99 (ms) | lower |" in out and "[" in out


def test_ten_percent_latency_regression_is_flagged_where_the_samples_show_it(runs, capsys):
    _, base, slower, _ = runs
    cmp = compare_dirs(base, slower, threshold_pct=5.0)
    bad = {r.key: r for r in cmp.regressions}
    rows = {r.key: r for r in cmp.rows}
    # TPOT varies ±5 % per token here: 24 requests show a 10 % shift beyond 5 % with confidence
    assert bad["mean_tpot_ms"].delta_pct == pytest.approx(10.0, abs=0.01)
    assert bad["mean_tpot_ms"].low_pct > 5.0
    # a p99 of 24 requests cannot show it: worse by the point, not with confidence
    assert rows["p99_ttft_ms"].verdict == "inconclusive" and "p99_ttft_ms" in cmp.suspects
    assert rows["p99_ttft_ms"].delta_pct == pytest.approx(10.0, abs=0.01)
    assert "request_throughput" not in bad  # the same arrivals: throughput barely moves
    assert cli(["compare", str(base), str(slower), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "REGRESSION" and "mean_tpot_ms" in out["regressions"]
    # a threshold above the change: no regression, and nothing worse than it by the point either
    assert cli(["compare", str(base), str(slower), "--threshold", "12"]) == 0


def test_better_latency_is_improved_not_a_regression(runs):
    _, base, _, faster = runs
    cmp = compare_dirs(base, faster)
    assert not cmp.regressions and cmp.verdict == "OK"
    assert {r.key for r in cmp.rows if r.verdict == "improved"} >= {
        "mean_tpot_ms",
        "median_tpot_ms",
    }


def test_throughput_drop_needs_the_requests_to_show_it(tmp_path, runs, capsys):
    _, base, _, _ = runs
    slow = build_synthetic_run(tmp_path / "lowrate", SynthRun(throughput_scale=0.6, **SMALL))
    cmp = compare_dirs(base, slow)
    row = {r.key: r for r in cmp.rows}["request_throughput"]
    # 24 requests: the rate's interval (quasi-Poisson) is too wide to confirm a 40 % drop
    assert row.delta_pct < -30 and row.verdict == "inconclusive" and row.low_pct < -5 < row.high_pct
    assert cmp.verdict == "INCONCLUSIVE" and "request_throughput" in cmp.suspects
    assert cli(["compare", str(base), str(slow)]) == 4
    # 400 requests each: it shows
    many = dict(SMALL, num_requests=400)
    b400 = build_synthetic_run(tmp_path / "b400", SynthRun(**many))
    s400 = build_synthetic_run(tmp_path / "s400", SynthRun(throughput_scale=0.6, **many))
    assert "request_throughput" in {r.key for r in compare_dirs(b400, s400).regressions}


def test_min_effect_keeps_tiny_absolute_changes_from_deciding(tmp_path, runs):
    _, base, slower, _ = runs
    cmp = compare_dirs(base, slower, min_effect={"tpot": 50.0})  # 50 ms: more than TPOT itself
    assert "mean_tpot_ms" not in {r.key for r in cmp.regressions}
    row = {r.key: r for r in cmp.rows}["mean_tpot_ms"]
    assert row.floor == 50.0 and row.verdict == "same"  # the whole change is below the floor
    # the default floor: 1 % of the base's E2E, a TPOT change counted over 15 more tokens
    base_row = {r.key: r for r in compare_dirs(base, slower).rows}["mean_tpot_ms"]
    from harness.results.reader import read_summary

    m = read_summary(base)["metrics"]
    assert base_row.floor == pytest.approx(m["mean_e2el_ms"] * 0.01 / 15)
    with pytest.raises(UsageError, match="--min-effect: unknown metric 'latency'"):
        compare_dirs(base, slower, min_effect={"latency": 5.0})


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


def test_history_band_widens_compare_and_shows_in_history(tmp_path, runs):
    """Three earlier runs of the same spec whose throughput spread ±15 %: compare's intervals
    widen by that run-to-run spread, and history shows the band."""
    _, base, _, _ = runs
    hist = tmp_path / "nights"
    for i, scale in enumerate((0.85, 1.0, 1.15)):
        d = hist / f"night-{i}"
        shutil.copytree(base, d)
        s = json.loads((d / "summary.json").read_text())
        s["metrics"]["request_throughput"] *= scale
        s["started_utc"] = f"2025-01-0{i + 1}T00:00:00Z"
        (d / "summary.json").write_text(json.dumps(s))
    alone = {r.key: r for r in compare_dirs(base, base).rows}["request_throughput"]
    cmp = compare_dirs(base, base, history_dir=hist)
    row = {r.key: r for r in cmp.rows}["request_throughput"]
    assert cmp.history_runs == 3 and "history of 3 runs" in row.basis
    # NEW against the noise band of the three: ln n − m ± t(2, 0.975)·s·√(1 + 1/3) on the log
    # scale, m and s the mean and spread of ln(0.85 b), ln(b), ln(1.15 b); the union with the
    # samples' interval
    import math
    import statistics

    logs = [math.log(0.85), 0.0, math.log(1.15)]
    m, s = statistics.mean(logs), statistics.stdev(logs)
    half = 4.302653 * s * math.sqrt(1 + 1 / 3)
    assert row.high_pct == pytest.approx(max(alone.high_pct, math.expm1(-m + half) * 100), rel=1e-4)
    assert row.low_pct == pytest.approx(min(alone.low_pct, math.expm1(-m - half) * 100), rel=1e-4)
    rows, _ = collect_history(hist)
    from harness.report.history import history_markdown

    md = history_markdown(rows, [])
    assert "## Noise band of tiny-tp2-pp4-cpu" in md and "| request_throughput | 3 |" in md
