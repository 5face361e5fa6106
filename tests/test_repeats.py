"""Repeats (issue 25 item 4) on synthetic summaries: the summary across runs, the SLO verdict
across runs, the run-to-run interval of a change, and ``harness compare`` with a repeats folder on
either side (the runs: tests/run_fixtures.py, their metrics scaled per run)."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import pytest

from harness.cli import main as cli
from harness.report.repeats_table import repeats_markdown
from harness.verdicts.change import runs_interval
from harness.verdicts.compare import compare_dirs
from harness.verdicts.repeats import REPEATS_FILE, metric_across, repeats_summary, verdict_across
from run_fixtures import SynthRun, build_synthetic_run

T_2_975 = 4.302653  # Student t, 2 degrees of freedom, 97.5 %
T_2_95 = 2.919986  # 95 %


def _summary(p99: float, thr: float, complete: bool = True, **extra) -> dict:
    return {
        "complete": complete,
        "name": "x",
        "verdict": "PASS",
        "metrics": {"p99_ttft_ms": p99, "request_throughput": thr, "completed": 24},
        "intervals": {
            "confidence": 0.95,
            "metrics": {"request_throughput": {"low": thr - 0.196, "high": thr + 0.196}},
        },
        "slo": [
            {"target": "p99_ttft_ms <= 200", "verdict": "INCONCLUSIVE"},
            {"target": "request_throughput >= 2", "verdict": "PASS"},
        ],
        **extra,
    }


def test_each_metric_across_runs_with_its_interval_and_both_spreads():
    runs = [_summary(150, 2.8), _summary(170, 3.0), _summary(160, 2.9)]
    m = metric_across(runs, "request_throughput", 0.95)
    sd = statistics.stdev([2.8, 3.0, 2.9])
    assert m["values"] == [2.8, 3.0, 2.9] and m["mean"] == pytest.approx(2.9)
    assert m["high"] - m["mean"] == pytest.approx(T_2_975 * sd / math.sqrt(3), rel=1e-5)
    assert m["run_to_run_sd_pct"] == pytest.approx(sd / 2.9 * 100)
    # each run's own se: half-width 0.196 / z 1.96 = 0.1, in % of its value
    expect = statistics.mean(0.1 / v * 100 for v in (2.8, 3.0, 2.9))
    assert m["within_run_sd_pct"] == pytest.approx(expect, rel=1e-4)
    assert metric_across(runs, "p99_ttft_ms", 0.95)["within_run_sd_pct"] is None  # no interval


def test_slo_verdict_across_runs_is_one_sided_on_the_mean_over_runs():
    # p99 TTFT 150, 170, 160: mean 160, upper bound 160 + t(2, .95)·10/√3 = 176.9
    v = verdict_across("p99_ttft_ms <= 200", [150, 170, 160], 0.95)
    assert v["verdict"] == "PASS" and v["high"] == pytest.approx(160 + T_2_95 * 10 / 3**0.5)
    assert verdict_across("p99_ttft_ms <= 170", [150, 170, 160], 0.95)["verdict"] == "INCONCLUSIVE"
    assert verdict_across("p99_ttft_ms <= 140", [150, 170, 160], 0.95)["verdict"] == "FAIL"
    assert verdict_across("request_throughput >= 2", [2.8, 3.0, 2.9], 0.95)["verdict"] == "PASS"
    # a percentile also needs the pooled binomial rule: 0 of 3 x 24 requests over does not bound
    # a p99 (299 needed), 0 of 3 x 100 does
    rows = [{"n": 24, "over": 0}] * 3
    v = verdict_across("p99_ttft_ms <= 200", [150, 170, 160], 0.95, rows)
    assert v["verdict"] == "INCONCLUSIVE" and "pooled binomial (LoadGen) INCONCLUSIVE" in v["rule"]
    rows = [{"n": 100, "over": 0}] * 3
    assert verdict_across("p99_ttft_ms <= 200", [150, 170, 160], 0.95, rows)["verdict"] == "PASS"
    one = verdict_across("p99_ttft_ms <= 200", [150], 0.95)
    assert one["verdict"] == "INCONCLUSIVE" and one["rule"] == "fewer than 2 runs"


def test_repeats_summary_lists_every_run_and_an_incomplete_one_makes_it_incomplete():
    runs = [_summary(150, 2.8), _summary(170, 3.0)]
    doc = repeats_summary(runs, ["run-01", "run-02"], 0.95, "a world per run")
    # two runs: t(1, .95) = 6.31; p99 160 + 6.31·14.1/√2 = 223 > 200 undecided, throughput
    # 2.9 − 6.31·0.141/√2 = 2.27 >= 2 met
    assert doc["verdict"] == "INCONCLUSIVE" and doc["complete_runs"] == 2
    assert [s["verdict"] for s in doc["slo"]] == ["INCONCLUSIVE", "PASS"]
    assert [s["per_run"] for s in doc["slo"]] == [["INCONCLUSIVE"] * 2, ["PASS"] * 2]
    md = repeats_markdown(doc)
    assert "| [run-01](run-01/report.md) | yes | PASS | 2.8 | 150 |" in md
    assert "| `p99_ttft_ms <= 200` | INCONCLUSIVE, INCONCLUSIVE | 160 | 96.86 .. 223.1 |" in md
    bad = runs + [_summary(0, 0, complete=False, incomplete_reason="received SIGTERM")]
    doc = repeats_summary(bad, ["run-01", "run-02", "run-03"], 0.95, "")
    assert doc["verdict"] == "INCOMPLETE" and doc["complete_runs"] == 2
    assert "| [run-03](run-03/report.md) | no | PASS (received SIGTERM) |" in repeats_markdown(doc)


def test_run_to_run_interval_of_a_change():
    b, n = [2.8, 3.0, 2.9], [2.5, 2.6, 2.4]
    lo, hi = runs_interval(b, n, 0.95)
    lb, ln = [math.log(x) for x in b], [math.log(x) for x in n]
    d = statistics.mean(ln) - statistics.mean(lb)
    vb, vn = statistics.variance(lb) / 3, statistics.variance(ln) / 3
    df = (vb + vn) ** 2 / (vb**2 / 2 + vn**2 / 2)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(vb + vn)
    assert (lo, hi) == pytest.approx((math.expm1(d - half), math.expm1(d + half)))
    # one run against three: that run is one more draw of their spread (the noise band)
    lo1, hi1 = runs_interval([3.0], n, 0.95)
    half1 = T_2_975 * statistics.stdev(ln) * math.sqrt(1 / 3 + 1)
    d1 = statistics.mean(ln) - math.log(3.0)
    assert (lo1, hi1) == pytest.approx((math.expm1(d1 - half1), math.expm1(d1 + half1)))
    assert runs_interval([3.0], [2.0], 0.95) is None


def _repeats_folder(root, base_run, scales) -> None:
    """A repeats folder whose runs are ``base_run`` with every latency and rate scaled."""
    summaries, dirs = [], []
    for i, scale in enumerate(scales, 1):
        d = root / f"run-{i:02d}"
        shutil.copytree(base_run, d)
        s = json.loads((d / "summary.json").read_text())
        for k, v in s["metrics"].items():
            if isinstance(v, float) and k.endswith("_ms"):
                s["metrics"][k] = v * scale
            elif isinstance(v, float) and ("throughput" in k or "goodput" in k):
                s["metrics"][k] = v / scale
        (d / "summary.json").write_text(json.dumps(s))
        summaries.append(s)
        dirs.append(d.name)
    doc = repeats_summary(summaries, dirs, 0.95, "synthetic")
    (root / REPEATS_FILE).write_text(json.dumps(doc))


def test_compare_takes_a_repeats_folder_on_either_side(tmp_path, capsys):
    base = build_synthetic_run(tmp_path / "single", SynthRun(steps=12, with_nvml=False))
    _repeats_folder(tmp_path / "old", base, (0.995, 1.0, 1.005))
    _repeats_folder(tmp_path / "same", base, (1.005, 0.995, 1.0))
    _repeats_folder(tmp_path / "slow", base, (1.29, 1.30, 1.31))
    cmp = compare_dirs(tmp_path / "old", tmp_path / "same")
    row = {r.key: r for r in cmp.rows}["mean_e2el_ms"]
    assert cmp.verdict == "OK" and "run-to-run variation of 3 + 3 runs" in row.basis
    assert row.verdict == "same" and -5 < row.low_pct < 0 < row.high_pct < 5
    assert cmp.warnings[0].startswith("BASE is a repeats folder of 3 runs")
    cmp = compare_dirs(tmp_path / "old", tmp_path / "slow")
    row = {r.key: r for r in cmp.rows}["mean_e2el_ms"]
    assert cmp.verdict == "REGRESSION" and row.verdict == "regression"
    assert row.delta_pct == pytest.approx(30.0, abs=0.2) and 20 < row.low_pct < 30 < row.high_pct
    # a single run against a repeats folder: the run is one more draw of the folder's spread
    cmp = compare_dirs(base, tmp_path / "old")
    row = {r.key: r for r in cmp.rows}["mean_e2el_ms"]
    assert "run-to-run variation of 1 + 3 runs" in row.basis and row.verdict == "same"
    assert cmp.warnings[0].startswith("NEW is a repeats folder of 3 runs")
    assert cli(["compare", str(tmp_path / "old"), str(tmp_path / "slow")]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_repeats_flag_refuses_what_it_cannot_do(tmp_path, capsys):
    cfg = "configs/tiny-tp2-pp4-cpu.yaml"
    assert cli(["run", cfg, "--repeats", "1"]) == 2
    assert "--repeats: must be >= 2" in capsys.readouterr().err
    assert cli(["run", cfg, "--repeats", "2", "--find-capacity"]) == 2
    assert "not with --find-capacity" in capsys.readouterr().err


@pytest.mark.slow
def test_two_repeats_of_a_tiny_world(tmp_path, capsys):
    """``--repeats 2`` of a small world (tiny Llama, PP2, 2 gloo ranks, 8 requests): two normal
    run directories with their reports, repeats.json and report.md across them, the exit code
    from the verdict across runs, and the folder as either side of ``harness compare``."""
    from demo_run import harness_run
    from harness.commands.run_exit import verdict_exit_code

    root = tmp_path / "rep"
    res = harness_run(
        root,
        "parallel.tp=1",
        "parallel.pp=2",
        "cluster.gpus_per_node=2",
        "workload.num_requests=8",
        'slo.targets=["request_throughput >= 0.01", "p99_ttft_ms <= 60000"]',
        flags=("--repeats", "2"),
        report=True,
        timeout=400,
    )
    doc = json.loads((root / REPEATS_FILE).read_text())
    assert res.returncode == verdict_exit_code(doc["verdict"]), res.stderr[-2000:]
    assert [r["dir"] for r in doc["runs"]] == ["run-01", "run-02"] and doc["complete_runs"] == 2
    assert doc["served_by"].startswith("a torchrun world per run")
    for d in ("run-01", "run-02"):
        s = json.loads((root / d / "summary.json").read_text())
        assert s["complete"] and s["metrics"]["completed"] == 8
        assert (root / d / "report.md").is_file() and (root / d / "requests.parquet").is_file()
    thr = doc["metrics"]["request_throughput"]
    assert len(thr["values"]) == 2 and thr["low"] < thr["mean"] < thr["high"]
    assert thr["run_to_run_sd_pct"] is not None and thr["within_run_sd_pct"] is not None
    # a p99 of 8 requests per run is undecided in each run, and across runs (16 pooled requests)
    (rate, p99) = doc["slo"]
    assert p99["per_run"] == ["INCONCLUSIVE", "INCONCLUSIVE"] and p99["verdict"] == "INCONCLUSIVE"
    assert "0 of 16 requests over" in p99["rule"]
    assert rate["verdict"] == "PASS" and rate["per_run"] == ["PASS", "PASS"]
    md = (root / "report.md").read_text()
    assert "| [run-01](run-01/report.md) | yes |" in md and "| [run-02](run-02/report.md)" in md
    capsys.readouterr()
    assert cli(["compare", str(root / "run-01"), str(root)]) in (0, 4)
    assert "NEW is a repeats folder of 2 runs" in capsys.readouterr().out
