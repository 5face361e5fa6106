"""A forecast's SLO verdicts from its prediction intervals (harness.predict.verdicts): PASS when the
whole interval meets a target, FAIL when it misses it, INCONCLUSIVE when it straddles the limit,
the point verdict labelled as such without an interval; by hand, through ``forecast`` and
``harness predict`` on a synthetic calibration run, and in the report beside a run's verdicts. No
world: quick tier."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from demo_run import DEMO_CONFIG, REPO
from harness.measure.prediction import end_confidence
from harness.predict.verdicts import basis_of, forecast_slo, judge_forecast, judge_one
from harness.report.doc import Table
from harness.report.sections_predicted import predicted_section
from harness.report.slo_table import verdict_text
from harness.spec.slo import parse_target

RUN_ROW_KEYS = {
    "target",
    "measured",
    "passed",
    "margin_pct",
    "verdict",
    "low",
    "high",
    "confidence",
    "rule",
    "n",
    "over",
    "more_requests",
}
METHOD = "prediction interval: draws 2 and 38 of 39 in order"


def _iv(low, high, n=39, level=0.9) -> dict:
    return {"low": low, "high": high, "confidence": level, "method": METHOD, "n": n}


# Point forecasts and their 90 % intervals (39 draws): p99 TTFT 1200 ms in [1000, 1500], throughput
# 3.2 req/s in [3.1, 3.4].
METRICS = {"p99_ttft_ms": 1200.0, "request_throughput": 3.2, "p90_tpot_ms": 5.0}
INTERVALS = {
    "level": 0.9,
    "draws": 39,
    "metrics": {"p99_ttft_ms": _iv(1000.0, 1500.0), "request_throughput": _iv(3.1, 3.4)},
}


@pytest.mark.parametrize(
    "target, verdict, words",
    [
        ("p99_ttft_ms <= 5000", "PASS", "interval below the limit 5000"),  # far above the interval
        ("p99_ttft_ms <= 500", "FAIL", "interval above the limit 500"),  # far below it
        ("p99_ttft_ms <= 1300", "INCONCLUSIVE", "interval straddles the limit 1300"),  # inside
        ("p99_ttft_ms <= 1500", "PASS", "interval below the limit 1500"),  # at the high end: met
        ("p99_ttft_ms <= 1000", "INCONCLUSIVE", "interval straddles the limit 1000"),  # low end
        ("request_throughput >= 2", "PASS", "interval above the limit 2"),
        ("request_throughput >= 5", "FAIL", "interval below the limit 5"),
        ("request_throughput >= 3.2", "INCONCLUSIVE", "interval straddles the limit 3.2"),
    ],
)
def test_verdict_from_the_whole_interval_by_hand(target, verdict, words):
    v = judge_one(parse_target(target), METRICS, INTERVALS)
    row = v.to_row()
    assert (row["verdict"], row["basis"]) == (verdict, "interval")
    assert row["passed"] == {"PASS": True, "FAIL": False}.get(verdict)
    assert row["rule"].startswith(words) and "90 % prediction interval" in row["rule"]
    iv = INTERVALS["metrics"][v.target.summary_key]
    assert (row["low"], row["high"], row["n"]) == (iv["low"], iv["high"], 39)
    assert row["measured"] == METRICS[v.target.summary_key]  # the point forecast
    assert row["confidence"] == pytest.approx(0.95)  # each end: draw 2 of 39 → 1 − 2/40
    assert row["more_requests"] is None and RUN_ROW_KEYS | {"basis"} == set(row)


def test_margin_confidence_and_open_ends_by_hand():
    v = judge_one(parse_target("p99_ttft_ms <= 5000"), METRICS, INTERVALS)
    assert v.margin_pct == pytest.approx((5000 - 1200) / 5000 * 100)  # 76 %, on the point
    assert end_confidence(39, 0.9) == pytest.approx(0.95)  # draws 2 and 38 of 39
    assert end_confidence(19, 0.9) == pytest.approx(0.95)  # draws 1 and 19 of 19: 1 − 1/20
    assert end_confidence(9, 0.8) == pytest.approx(0.9)  # 1 − 1/10
    assert end_confidence(5, 0.9) == pytest.approx(0.95)  # no pair reaches 90 %: the nominal
    # an open interval (too few draws measured it) decides nothing; an open low end still lets
    # the high end pass a "<=" target
    t = parse_target("p99_ttft_ms <= 5000")
    shut = {"metrics": {"p99_ttft_ms": _iv(None, None, n=5)}}
    half = {"metrics": {"p99_ttft_ms": _iv(None, 1500.0)}}
    v = judge_one(t, METRICS, shut)
    assert v.verdict == "INCONCLUSIVE" and "open at the end that decides (limit 5000)" in v.rule
    assert judge_one(t, METRICS, half).verdict == "PASS"
    assert judge_one(parse_target("p99_ttft_ms <= 500"), METRICS, half).verdict == "INCONCLUSIVE"


def test_overall_is_the_runs_rule():
    """FAIL beats INCONCLUSIVE beats UNMEASURED beats PASS (harness.measure.slo_verdicts.overall),
    and no target is UNMEASURED, as for a run."""

    def verdict(*texts):
        return forecast_slo([parse_target(t) for t in texts], METRICS, INTERVALS)["verdict"]

    assert verdict("p99_ttft_ms <= 5000", "request_throughput >= 2") == "PASS"
    assert verdict("p99_ttft_ms <= 5000", "request_throughput >= 3.2") == "INCONCLUSIVE"
    assert verdict("p99_ttft_ms <= 1300", "request_throughput >= 5") == "FAIL"
    assert verdict("p99_ttft_ms <= 5000", "p99_e2el_ms <= 10") == "UNMEASURED"  # no value
    assert forecast_slo([], METRICS, INTERVALS) == {
        "slo": [],
        "verdict": "UNMEASURED",
        "verdict_basis": None,
    }


def test_without_an_interval_the_point_verdict_is_labelled():
    straddling = parse_target("p99_ttft_ms <= 1300")  # INCONCLUSIVE on its interval
    out = forecast_slo([straddling, parse_target("request_throughput >= 5")], METRICS, None)
    passed, failed = out["slo"]
    assert (passed["verdict"], passed["basis"], passed["passed"]) == ("PASS", "point", True)
    assert (failed["verdict"], failed["basis"]) == ("FAIL", "point")
    assert "point forecast only, no prediction intervals (--draws 0)" in passed["rule"]
    assert (passed["low"], passed["high"], passed["confidence"]) == (None, None, None)
    assert (out["verdict"], out["verdict_basis"]) == ("FAIL", "point")
    assert verdict_text(passed) == "PASS (point only)"
    # a metric the draws did not cover, beside one they did: judged on its point, said so
    mixed = judge_forecast(
        [parse_target("p90_tpot_ms <= 10"), parse_target("p99_ttft_ms <= 5000")], METRICS, INTERVALS
    )
    assert [(v.verdict, v.basis) for v in mixed] == [("PASS", "point"), ("PASS", "interval")]
    assert "no prediction interval for this metric" in mixed[0].rule
    assert basis_of(mixed) == "mixed"
    assert verdict_text(mixed[1].to_row()) == "PASS"
    inconclusive = judge_one(straddling, METRICS, INTERVALS).to_row()
    assert verdict_text(inconclusive) == "INCONCLUSIVE"  # no "(+N requests)": not a run


def test_report_shows_the_forecast_verdict_beside_the_measured():
    targets = [parse_target("p99_ttft_ms <= 1300"), parse_target("request_throughput >= 2")]
    pred = {
        "kind": "harness.predict/1",
        "metrics": METRICS,
        "intervals": INTERVALS,
        **forecast_slo(targets, METRICS, INTERVALS),
    }
    measured = [
        {"target": "p99_ttft_ms <= 1300", "measured": 1250.0, "verdict": "PASS", "passed": True},
        {
            "target": "request_throughput >= 2",
            "measured": 3.3,
            "verdict": "INCONCLUSIVE",
            "more_requests": 40,
        },
    ]
    ctx = SimpleNamespace(run=SimpleNamespace(summary={"metrics": {}, "slo": measured}))
    section = predicted_section(ctx, pred)
    table = next(
        b for b in section.blocks if isinstance(b, Table) and "predicted verdict" in b.header
    )
    assert table.header == [
        "SLO target",
        "predicted",
        "interval",
        "predicted verdict",
        "measured",
        "measured verdict",
    ]
    assert table.rows == [
        ["p99_ttft_ms <= 1300", "1,200", "[1,000, 1,500]", "INCONCLUSIVE", "1,250", "PASS"],
        [
            "request_throughput >= 2",
            "3.2",
            "[3.1, 3.4]",
            "PASS",
            "3.3",
            "INCONCLUSIVE (+40 requests)",
        ],
    ]
    assert "predicted verdict INCONCLUSIVE (from its intervals)" in section.blocks[0].text
    # a forecast made with --draws 0: the point verdict, labelled, and no interval
    pred_point = {**pred, **forecast_slo(targets, METRICS, None)}
    pred_point.pop("intervals")
    table = next(
        b
        for b in predicted_section(ctx, pred_point).blocks
        if isinstance(b, Table) and "predicted verdict" in b.header
    )
    assert [r[2:4] for r in table.rows] == [["—", "PASS (point only)"], ["—", "PASS (point only)"]]


# ---------------------------------------------------------------- through forecast and the verb

BASE = ["workload.num_requests=24", "slo.goodput={ttft: 100000, tpot: 100000}"]


def _targets(*texts: str) -> str:
    return "slo.targets=[" + ", ".join(texts) + "]"


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """A synthetic calibration run (its requests' TPOT near what its steps simulate to: the
    closure converges at once) and its closed model."""
    from harness.predict.closure import calibrated
    from harness.spec.spec import load_spec
    from run_fixtures import build_synthetic_run

    run = build_synthetic_run(tmp_path_factory.mktemp("fv") / "calibration", tpot_s=0.0165)
    return run, calibrated(run, load_spec(DEMO_CONFIG, BASE))


def test_forecast_judges_each_target_on_its_interval(calibration, tmp_path):
    """Targets far above the interval (PASS), far below it (FAIL) and at its middle
    (INCONCLUSIVE), through ``forecast`` and ``harness predict``: the rows carry the point, the
    interval and the rule; the text shows them; the exit stays 0 for an INCONCLUSIVE forecast."""
    from harness.commands.predict import render
    from harness.predict.forecast import forecast
    from harness.spec.spec import load_spec

    run, model = calibration
    far = ("p50_tpot_ms <= 100000", "mean_tpot_ms <= 0.001")
    spec = load_spec(DEMO_CONFIG, [*BASE, _targets(*far)])
    pred = forecast(spec, str(run), model=model, draws=19)
    ivs = pred["intervals"]["metrics"]
    rows = {r["target"]: r for r in pred["slo"]}
    assert [rows[t]["verdict"] for t in far] == ["PASS", "FAIL"]
    for t, key in zip(far, ("p50_tpot_ms", "mean_tpot_ms")):
        assert (rows[t]["low"], rows[t]["high"]) == (ivs[key]["low"], ivs[key]["high"])
        assert rows[t]["measured"] == pred["metrics"][key] and rows[t]["basis"] == "interval"
        assert rows[t]["n"] == 19 and rows[t]["confidence"] == pytest.approx(0.95)
    assert "interval below the limit 100000" in rows[far[0]]["rule"]
    assert "interval above the limit 0.001" in rows[far[1]]["rule"]
    assert (pred["verdict"], pred["verdict_basis"]) == ("FAIL", "interval")
    text = render(pred)
    assert (
        f"[{ivs['p50_tpot_ms']['low']:.3g}, {ivs['p50_tpot_ms']['high']:.3g}]  PASS — interval "
        in text
    )
    assert "overall: FAIL (from the intervals" in text

    # the same calibration without draws: point verdicts, labelled
    point = forecast(spec, str(run), model=model, draws=0)
    assert "intervals" not in point
    assert [(r["verdict"], r["basis"]) for r in point["slo"]] == [
        ("PASS", "point"),
        ("FAIL", "point"),
    ]
    assert (point["verdict"], point["verdict_basis"]) == ("FAIL", "point")
    text = render(point)
    assert "PASS (point only) — point forecast only, no prediction intervals (--draws 0)" in text
    assert "overall: FAIL (on the point forecast only" in text

    # a limit at the middle of median TPOT's interval: the verb says INCONCLUSIVE, exits 0
    iv = ivs["median_tpot_ms"]
    assert iv["high"] > iv["low"], iv
    mid = f"median_tpot_ms <= {(iv['low'] + iv['high']) / 2:.6g}"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "predict",
            str(DEMO_CONFIG),
            "--from",
            str(run),
            *[a for s in [*BASE, _targets(far[0], mid)] for a in ("--set", s)],
            "--draws",
            "19",
            "--out",
            str(tmp_path / "pred.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "pred.json").read_text())
    assert out["intervals"]["metrics"]["median_tpot_ms"] == iv  # the same draws as in-process
    row = next(r for r in out["slo"] if r["target"] == mid)
    assert (row["verdict"], row["passed"], row["low"], row["high"]) == (
        "INCONCLUSIVE",
        None,
        iv["low"],
        iv["high"],
    )
    assert row["rule"].startswith("interval straddles the limit")
    assert (out["verdict"], out["verdict_basis"]) == ("INCONCLUSIVE", "interval")
    line = next(s for s in res.stdout.splitlines() if s.strip().startswith(f"SLO {mid}"))
    assert f"[{iv['low']:.3g}, {iv['high']:.3g}]  INCONCLUSIVE — interval straddles" in line
    assert "  overall: INCONCLUSIVE (from the intervals" in res.stdout
