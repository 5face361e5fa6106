"""harness predict: the step-cost fit, the simulated serving loop, the forecast of a real run, the
report beside it, the capacity search on the simulator and bad input.

The only distributed world is the session's shared CPU demo run (tests/demo_run.py); this module
starts none of its own."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from demo_run import DEMO_CONFIG, REPO, demo
from harness.errors import UsageError
from harness.measure.prediction import inside
from harness.predict.calibrate import PipelineModel, from_run
from harness.predict.closure import close_on, scaled
from harness.predict.fit import StageCost, fit_stage
from harness.predict.forecast import forecast, simulate_spec
from harness.predict.simulate import SimStage, simulate
from harness.report.sections_predicted import ROWS, inside_text, interval_text
from harness.results.schema import rows_to_table
from harness.spec.spec import load_spec
from run_fixtures import build_synthetic_run

HAND = {"c0": 0.002, "tokens": 1e-4, "rows": 5e-4, "attn_pairs": 2e-7, "depth": 3e-3}


def _hand_cost(f: dict) -> float:
    return HAND["c0"] + sum(HAND[k] * f[k] for k in ("tokens", "rows", "attn_pairs", "depth"))


def _samples() -> list:
    out = []
    for tokens, rows, attn, depth in [
        (1, 1, 40, 1),
        (4, 4, 400, 2),
        (33, 2, 600, 1),
        (64, 1, 2080, 3),
        (8, 8, 900, 4),
        (17, 3, 170, 2),
        (2, 2, 5000, 4),
        (100, 5, 3000, 1),
    ]:
        f = {"tokens": tokens, "rows": rows, "attn_pairs": attn, "depth": depth}
        out.append((f, _hand_cost(f)))
    return out


def test_fit_recovers_hand_coefficients_and_drops_a_stall():
    fit = fit_stage(0, _samples())
    assert fit.intercept_s == pytest.approx(HAND["c0"], abs=1e-12)
    for k in ("tokens", "rows", "attn_pairs", "depth"):
        assert fit.coef[k] == pytest.approx(HAND[k], rel=1e-6)
    assert fit.residuals.rmse_s < 1e-12 and fit.residuals.r2 == pytest.approx(1.0)
    assert fit.range["tokens"] == (1.0, 100.0) and fit.range["depth"] == (1.0, 4.0)
    # one 2-second stall among them (a loaded host): dropped, the coefficients survive
    stalled = _samples() + [({"tokens": 3, "rows": 3, "attn_pairs": 30, "depth": 2}, 2.0)]
    robust = fit_stage(0, stalled)
    assert robust.residuals.dropped == 1 and robust.residuals.n == 9
    assert robust.coef["tokens"] == pytest.approx(HAND["tokens"], rel=1e-6)
    assert max(robust.spread_s) == pytest.approx(2.0 - _hand_cost(stalled[-1][0]), rel=1e-6)


def test_fit_keeps_coefficients_non_negative_and_flags_constant_features():
    # decode only: tokens == rows (collinear), depth constant: never a negative cost per token
    samples = [
        ({"tokens": b, "rows": b, "attn_pairs": 0, "depth": 1}, 0.01 + 0.002 * b)
        for b in (1, 2, 4, 8)
    ]
    fit = fit_stage(1, samples)
    assert all(v >= 0 for v in fit.coef.values())
    assert set(fit.unfitted) == {"attn_pairs", "depth"}
    assert fit.cost({"tokens": 6, "rows": 6, "attn_pairs": 0, "depth": 1}) == pytest.approx(
        0.022, rel=1e-9
    )
    assert fit.outside({"tokens": 16, "rows": 16, "attn_pairs": 0, "depth": 1}) == [
        "tokens",
        "rows",
    ]


def _spec(*extra: str, pp: int = 1, tp: int = 1):
    return load_spec(
        DEMO_CONFIG,
        [
            f"parallel.tp={tp}",
            f"parallel.pp={pp}",
            f"cluster.gpus_per_node={tp * pp}",
            "workload.input_len={dist: fixed, value: 8}",
            "workload.output_len={dist: fixed, value: 4}",
            *extra,
        ],
    )


def _constant(pp: int, step_s: float) -> PipelineModel:
    wide = {k: (0.0, 1e12) for k in ("tokens", "rows", "attn_pairs", "depth")}
    return PipelineModel(
        stages=[StageCost(s, step_s, {}, range=dict(wide)) for s in range(pp)],
        hop_s=[0.0] * pp,
        return_s=0.0,
        loop_s=0.0,
    )


def test_simulator_closed_loop_one_constant_step_cost_is_exact():
    """pp 1, closed loop 1, every step 10 ms, 4 output tokens: TTFT 10 ms, TPOT 10 ms, E2E 40 ms,
    and one request every 40 ms (25 req/s)."""
    spec = _spec("workload.arrival=closed", "workload.concurrency=1", "workload.num_requests=6")
    out = simulate_spec(spec, _constant(1, 0.010))
    m = out["metrics"]
    assert m["completed"] == 6
    assert m["median_ttft_ms"] == pytest.approx(10.0, abs=1e-6)
    assert m["p99_tpot_ms"] == pytest.approx(10.0, abs=1e-6)
    assert m["median_e2el_ms"] == pytest.approx(40.0, abs=1e-6)
    assert m["request_throughput"] == pytest.approx(25.0, rel=1e-6)
    assert out["extrapolation"] == []


def test_simulator_honours_the_concurrency_cap_hand_timeline():
    """pp 1, every step 10 ms, 4 output tokens, 12 requests 1 ms apart with at most 1 in flight:
    each request is sent at the previous one's finish and served alone in 40 ms, so the
    throughput is 1/40 ms = 25 req/s and E2E from the send 40 ms; from the arrival, request k
    (sent at 40k ms, arrived at k ms) also waited at the client: E2E 40 + 39k ms, mean 254.5 ms.
    Without the cap all 12 share the batch."""
    sets = ["workload.arrival=constant", "workload.rate_rps=1000", "workload.num_requests=12"]
    capped = simulate_spec(_spec(*sets, "workload.max_concurrency=1"), _constant(1, 0.010))
    m, send = capped["metrics"], capped["metrics_from_send"]
    assert m["request_throughput"] == pytest.approx(25.0, rel=1e-9)
    assert send["mean_e2el_ms"] == pytest.approx(40.0, abs=1e-6)
    assert send["p99_ttft_ms"] == pytest.approx(10.0, abs=1e-6)
    assert m["mean_e2el_ms"] == pytest.approx(254.5, abs=1e-6)
    assert send["mean_client_queue_ms"] == pytest.approx(214.5, abs=1e-6)
    free = simulate_spec(_spec(*sets), _constant(1, 0.010))
    assert free["metrics"]["request_throughput"] > 5 * m["request_throughput"]
    assert "metrics_from_send" not in free


def test_simulator_pipeline_two_stages_two_in_flight_hand_timeline():
    """pp 2, 2 micro-batches in flight, 10 ms per stage, closed loop 2. By hand: A (request 0's
    prefill) runs stage 0 at 0–10 and stage 1 at 10–20; B (request 1) stage 0 10–20, stage 1 20–30;
    every later step of a sequence leaves 20 ms after its previous one. TTFT 20 and 30 ms; TPOT 20
    ms."""
    spec = _spec(
        "workload.arrival=closed", "workload.concurrency=2", "workload.num_requests=2", pp=2
    )
    sim = simulate(spec, _trace(spec), _constant(2, 0.010), num_slots=16)
    recs = sorted(sim.records, key=lambda r: r.request_id)
    assert [r.first_token_s for r in recs] == pytest.approx([0.020, 0.030])
    for r in recs:
        gaps = [b - a for a, b in zip(r.token_times_s, r.token_times_s[1:])]
        assert gaps == pytest.approx([0.020] * 3)


def _trace(spec):
    from harness.spec.workload import build_trace

    return build_trace(
        spec.workload, spec.shape.vocab, spec.run.max_seq_len or spec.shape.max_context
    )


class _CheckedStage(SimStage):
    """A SimStage that asserts the pipeline invariants at every submit."""

    def submit(self, meta, token_ids):
        slots = set(meta.slots)
        for m, _, _ in self.pending:  # a sequence is in at most one micro-batch in flight
            assert not slots & set(m.slots)
        assert len(self.pending) < self.groups
        assert sum(meta.n_tokens) <= self.budget and meta.batch <= self.max_batch
        return super().submit(meta, token_ids)


def test_closure_scales_every_time_until_the_run_is_met():
    """The 2-stage timeline above has ITL 20 ms by hand. Closed on a run that measured 26 ms: the
    factor is 1.3, every stage cost and residual is scaled by it, and the scaled model's simulation
    gives 26 ms; the model it was given is left as it was. A run 10× off hits the bound and says so;
    a run with no decode interval is left unclosed."""
    spec = _spec(
        "workload.arrival=closed", "workload.concurrency=2", "workload.num_requests=2", pp=2
    )
    model = _constant(2, 0.010)
    closed = close_on(model, spec, 26.0)
    assert closed.closure["factor"] == pytest.approx(1.3, rel=1e-9)
    assert closed.closure["error_before"] == pytest.approx(20.0 / 26.0 - 1.0, rel=1e-9)
    assert abs(closed.closure["error_after"]) < 1e-9
    assert [s.intercept_s for s in closed.stages] == pytest.approx([0.013, 0.013], rel=1e-12)
    assert [s.intercept_s for s in model.stages] == [0.010, 0.010]
    assert simulate_spec(spec, closed)["metrics"]["mean_itl_ms"] == pytest.approx(26.0, rel=1e-9)
    assert simulate_spec(spec, closed)["metrics"]["median_ttft_ms"] == pytest.approx(
        1.3 * 25.0, rel=1e-9
    )
    noisy = _constant(2, 0.010)
    noisy.stages[1].spread_s, noisy.return_samples, noisy.loop_s = [0.001, -0.002], [0.004], 0.0005
    big = scaled(noisy, 1.5)
    assert [*big.stages[1].spread_s, *big.return_samples, big.loop_s] == pytest.approx(
        [0.0015, -0.003, 0.006, 0.00075]
    )
    far = close_on(model, spec, 200.0)
    assert far.closure["factor"] == 2.0 and any("unreliable" in n for n in far.notes)
    none = close_on(model, spec, None)
    assert (
        none.closure["factor"] == 1.0
        and "skipped" in none.closure
        and none.stages[0].intercept_s == 0.010
    )


def test_scheduler_invariants_hold_in_simulation(monkeypatch):
    spec = _spec(
        "workload.rate_rps=40",
        "workload.num_requests=60",
        "run.max_num_batched_tokens=16",
        "workload.input_len={dist: uniform, min: 4, max: 40}",
        pp=4,
        tp=2,
    )
    model = _constant(4, 0.004)
    for s in model.stages:
        s.spread_s = [-0.002, 0.0, 0.003, 0.010]
    _CheckedStage.groups, _CheckedStage.budget, _CheckedStage.max_batch = (
        spec.micro_batches,
        16,
        spec.run.max_batch,
    )
    monkeypatch.setattr("harness.predict.simulate.SimStage", _CheckedStage)
    sim = simulate(spec, _trace(spec), model, num_slots=8)
    assert len(sim.records) == 60 and all(r.completed for r in sim.records)
    for r in sim.records:
        assert len(r.token_times_s) == r.output_len
        assert r.arrival_s <= r.admitted_s <= r.first_token_s == r.token_times_s[0]
        assert r.token_times_s == sorted(r.token_times_s) and r.finish_s == r.token_times_s[-1]
    assert max(row[8] for row in sim.step_rows) <= spec.micro_batches  # in_flight column
    assert sim.steps == len(sim.step_rows)


def _hand_run(tmp_path: Path) -> Path:
    """A 2-stage run whose steps never overlap: stage 0 costs 2 ms + 0.1 ms/token + 0.5 ms/row,
    stage 1 3 ms + 0.2 ms/token, the tokens come back 1.5 ms after stage 1 sends, and the next step
    is submitted 0.5 ms after that (the coordinator's own time)."""
    run = build_synthetic_run(tmp_path / "hand", tp=1, pp=2, steps=4)
    steps, stages = [], []
    t = 0.0
    for k, (tokens, rows) in enumerate(
        [(1, 1), (5, 2), (9, 3), (33, 1), (2, 2), (40, 4), (7, 7), (3, 1)]
    ):
        t = t + (steps[-1]["t_done_s"] - t + 0.0005 if steps else 0.0)
        a0, a1 = 0.002 + 1e-4 * tokens + 5e-4 * rows, 0.003 + 2e-4 * tokens
        stages.append(
            {
                "rank": 0,
                "dp": 0,
                "stage": 0,
                "tp": 0,
                "step": k,
                "t_recv_start_s": t,
                "t_recv_end_s": t,
                "t_compute_end_s": t + a0,
                "t_send_end_s": t + a0,
            }
        )
        stages.append(
            {
                "rank": 1,
                "dp": 0,
                "stage": 1,
                "tp": 0,
                "step": k,
                "t_recv_start_s": t - 0.5,
                "t_recv_end_s": t + a0 + 1e-4,
                "t_compute_end_s": t + a0 + a1,
                "t_send_end_s": t + a0 + a1,
            }
        )
        steps.append(
            {
                "replica": 0,
                "step": k,
                "phase": "decode",
                "n_rows": rows,
                "n_prefill_rows": 0,
                "n_decode_rows": rows,
                "n_tokens": tokens,
                "padded_tokens": tokens,
                "in_flight": 1,
                "available": 0,
                "t_submit_s": t,
                "t_done_s": t + a0 + a1 + 0.0015,
                "warmup": False,
                "attn_pairs": tokens * (tokens + 1) // 2,
            }
        )
    pq.write_table(rows_to_table("steps", steps), run / "steps.parquet")
    pq.write_table(rows_to_table("stages", stages), run / "stages.parquet")
    return run


def test_calibration_from_run_tables_recovers_hand_stage_costs(tmp_path):
    spec = _spec(pp=2)
    model = from_run(_hand_run(tmp_path), spec)
    s0, s1 = model.stages
    assert s0.intercept_s == pytest.approx(0.002, abs=1e-9)
    assert s0.coef["tokens"] == pytest.approx(1e-4, rel=1e-5) and s0.coef["rows"] == pytest.approx(
        5e-4, rel=1e-5
    )
    assert s1.intercept_s == pytest.approx(0.003, abs=1e-9) and s1.coef["tokens"] == pytest.approx(
        2e-4, rel=1e-5
    )
    assert s1.coef["rows"] == pytest.approx(0.0, abs=1e-9)
    assert model.return_s == pytest.approx(0.0015, abs=1e-9)
    assert model.loop_s == pytest.approx(0.0005, abs=1e-9)
    assert "depth" in s0.unfitted  # the steps never overlapped


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return demo(tmp_path_factory).run_dir


def test_forecast_of_the_measured_workload_is_near_the_run(demo_dir, tmp_path):
    """The demo's own workload, forecast from its own tables. The host is shared and loaded (other
    sessions' worlds and servers), so the bound is generous: within 50 % on the medians and the
    throughput (docs/performance.md has the benchmark's errors on unseen workloads)."""
    spec = load_spec(DEMO_CONFIG, ["run.record_tokens=true"])
    pred = forecast(spec, str(demo_dir))
    measured = json.loads((demo_dir / "summary.json").read_text())["metrics"]
    for key in ("median_ttft_ms", "median_tpot_ms", "request_throughput"):
        assert pred["metrics"][key] == pytest.approx(measured[key], rel=0.5), key
    # closed on the run itself: its own mean ITL is met (the factor is the part the stage model
    # missed)
    closure = pred["model"]["closure"]
    assert 0.5 <= closure["factor"] <= 2.0 and "skipped" not in closure
    assert pred["metrics"]["mean_itl_ms"] == pytest.approx(measured["mean_itl_ms"], rel=0.02)
    assert closure["error_before"] == pytest.approx(
        closure["simulated_before"] / measured["mean_itl_ms"] - 1
    )
    assert set(measured) <= set(pred["metrics"])  # the summary's metric keys, every one
    # each latency statistic and rate with its 90 % prediction interval, holding the point
    ivs = pred["intervals"]
    assert (ivs["level"], ivs["draws"], ivs["ranks"]) == (0.9, 39, [2, 38]) and len(
        ivs["sources"]
    ) == 2
    assert {"median_ttft_ms", "p99_tpot_ms", "mean_itl_ms", "request_throughput"} <= set(
        ivs["metrics"]
    )
    for key, iv in ivs["metrics"].items():
        if iv["low"] is not None:  # a statistic some draws lack may stay open
            assert iv["low"] <= pred["metrics"][key] <= iv["high"], key
        assert iv["confidence"] == 0.9
    for key in ("median_ttft_ms", "p99_tpot_ms", "mean_itl_ms", "request_throughput"):
        assert ivs["metrics"][key]["n"] == 39, key
    assert ivs["metrics"]["median_tpot_ms"]["high"] > ivs["metrics"]["median_tpot_ms"]["low"]
    assert [r["target"] for r in pred["slo"]] == [
        r["target"] for r in json.loads((demo_dir / "summary.json").read_text())["slo"]
    ]
    # the report shows it beside the bound and the measurement
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "report"
    rc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "report",
            str(demo_dir),
            "--predicted",
            str(tmp_path / "pred.json"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    md = (out / "report.md").read_text()
    assert "Predicted (calibrated) vs measured" in md
    row = next(line for line in md.splitlines() if line.startswith("| TPOT median (ms)"))
    err = (
        (pred["metrics"]["median_tpot_ms"] - measured["median_tpot_ms"])
        / measured["median_tpot_ms"]
        * 100
    )
    assert f"{err:+.1f} %" in row and "≥" in row
    tpot = ivs["metrics"]["median_tpot_ms"]
    assert inside_text(tpot, measured["median_tpot_ms"]) in row and interval_text(tpot) in row
    judged = [inside(ivs["metrics"].get(k), measured.get(k)) for _, k, *_ in ROWS]
    judged = [j for j in judged if j is not None]
    assert (
        f"{sum(judged)} of {len(judged)} measurements inside their 90 % forecast intervals "
        "(39 draws" in md
    )


def test_capacity_search_on_the_simulator(demo_dir, tmp_path):
    res = _cli(
        "run",
        str(DEMO_CONFIG),
        "--find-capacity",
        "--predict",
        "--from",
        str(demo_dir),
        "--results-dir",
        str(tmp_path / "cap"),
    )
    assert res.returncode in (0, 1, 4), res.stderr
    cap = json.loads((tmp_path / "cap" / "capacity.json").read_text())
    assert cap["predicted"] is True and cap["field"] == "workload.rate_rps" and cap["probes"]
    passed = [p["workload.rate_rps"] for p in cap["probes"] if p["verdict"] == "PASS"]
    failed = [p["workload.rate_rps"] for p in cap["probes"] if p["verdict"] != "PASS"]
    assert cap["capacity"] == (
        max(x for x in passed if x < min(failed, default=math.inf)) if passed else None
    )
    assert not (tmp_path / "cap" / "probe-00").exists()  # no real run was made


def test_predict_honours_max_concurrency_on_the_demo_calibration(demo_dir, tmp_path):
    """The issue's command: a cap of 1 at 50 req/s, far above the demo's capacity. One request in
    flight at a time, so the throughput is one over one request's service time: the mean E2E from
    the send (from the arrival it also holds the client queue, which grows all run)."""
    res = _cli(
        "predict",
        str(DEMO_CONFIG),
        "--from",
        str(demo_dir),
        "--set",
        "workload.rate_rps=50",
        "--set",
        "workload.max_concurrency=1",
        "--level",
        "0.8",
        "--out",
        str(tmp_path / "pred.json"),
    )
    assert res.returncode == 0, res.stderr
    pred = json.loads((tmp_path / "pred.json").read_text())
    # the JSON carries each metric's interval at the level asked (0.8: 19 draws, the 2nd and 18th)
    ivs = pred["intervals"]
    assert (ivs["level"], ivs["draws"], ivs["ranks"]) == (0.8, 19, [2, 18])
    tpot = ivs["metrics"]["median_tpot_ms"]
    assert tpot["low"] <= pred["metrics"]["median_tpot_ms"] <= tpot["high"]
    # the text shows point [low, high]
    row = next(line for line in res.stdout.splitlines() if line.strip().startswith("TPOT (ms)"))
    assert f"[{tpot['low']:.3g}, {tpot['high']:.3g}]" in row, row
    assert "80 % prediction interval" in res.stdout
    service_s = pred["metrics_from_send"]["mean_e2el_ms"] / 1e3
    assert pred["metrics"]["request_throughput"] == pytest.approx(1 / service_s, rel=0.2)
    assert pred["workload"]["max_concurrency"] == 1
    # the client queue: from the arrival, the mean E2E is several service times
    assert pred["metrics"]["mean_e2el_ms"] > 3 * pred["metrics_from_send"]["mean_e2el_ms"]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv], cwd=REPO, capture_output=True, text=True
    )


def _cli_here(capsys, *argv: str) -> tuple[int, str]:
    """The CLI in this process (no 3 s of imports per case): exit code and stderr."""
    from harness import cli

    capsys.readouterr()
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    return rc, capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path, demo_dir, capsys):
    no_tables = tmp_path / "no-tables"
    build_synthetic_run(no_tables)
    (no_tables / "stages.parquet").unlink()
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(
            {
                "schema": "harness.emulate/1",
                "ranks": [],
                "spec": {"model": "llama3-8b", "dtype": "bf16", "tp": 2, "pp": 4},
            }
        )
    )
    cases = [
        (["--from", str(tmp_path / "missing")], "no such run directory"),
        (["--from", str(no_tables)], "no stages table"),
        (["--from", str(other)], "model is 'llama3-8b'"),
        (
            ["--from", str(demo_dir), "--set", "parallel.tp=1", "--set", "cluster.gpus_per_node=4"],
            "TP2-PP4",
        ),
        (["--from", str(demo_dir), "--level", "1.5"], "--level 1.5: must lie in (0.5, 1)"),
        (["--from", str(demo_dir), "--draws", "5"], "--draws 5: a 0.9 interval needs at least 19"),
    ]
    # the first case through a real process (what a user sees), the rest in this one
    res = _cli("predict", str(DEMO_CONFIG), *cases[0][0])
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and cases[0][1] in res.stderr
    for extra, needle in cases[1:]:
        rc, err = _cli_here(capsys, "predict", str(DEMO_CONFIG), *extra)
        assert rc == 2, (extra, err)
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    with pytest.raises(UsageError, match="--predicted"):
        from harness.report.sections_predicted import load_prediction

        load_prediction(demo_dir, str(other))
    rc, err = _cli_here(capsys, "run", str(DEMO_CONFIG), "--find-capacity", "--predict")
    assert rc == 2 and "--from" in err


def test_forecast_from_an_emulate_profile_is_labelled_unchecked(tmp_path):
    """A one-device profile of stages 0, 1 and 3 (hand times: 1 ms + 0.01 ms per token) forecasts
    the 8-rank deployment: stage 2 takes stage 1's fit (same kind), each stage adds the planner's
    communication floor, and the forecast says no 8-GPU measurement checked it."""
    from harness.plan import planner

    def rank(stage):
        dec = [
            {"phase": "decode", "batch": b, "tokens": 1, "context": c, "step_s": 0.001 + 1e-5 * b}
            for b in (1, 4, 8)
            for c in (32, 96)
        ]
        pre = [
            {"phase": "prefill", "batch": 1, "tokens": t, "context": 0, "step_s": 0.001 + 1e-5 * t}
            for t in (16, 64)
        ]
        return {"stage": stage, "decode": dec, "prefill": pre}

    prof = tmp_path / "emulate.json"
    prof.write_text(
        json.dumps(
            {
                "schema": "harness.emulate/1",
                "device": {"type": "cuda", "name": "H100"},
                "spec": {"model": "tiny", "dtype": "fp32", "tp": 2, "pp": 4},
                "ranks": [rank(0), rank(1), rank(3)],
            }
        )
    )
    spec = load_spec(DEMO_CONFIG, ["workload.num_requests=12"])
    pred = forecast(spec, str(prof))
    assert pred["checked"].startswith("not checked against an 8-GPU measurement")
    stages = pred["model"]["stages"]
    assert stages[2]["source"] == "emulated stage 1 (same kind)"
    tm = planner.Timing(
        spec.shape,
        spec.layout,
        spec.gpu,
        spec.dtype_bytes,
        spec.run.max_batch,
        planner.links(spec.layout, spec.gpu, spec.cluster.gpus_per_node),
    )
    comm_1tok = tm.comm(0, 1, 1)
    assert stages[0]["intercept_s"] + stages[0]["coef"]["tokens"] == pytest.approx(
        0.001 + 1e-5 + comm_1tok, rel=1e-6
    )
    assert pred["metrics"]["completed"] == 12 and pred["model"]["loop_s"] == 0.0
    # no run to resample: the intervals are residual resampling alone, and an exact fit has no
    # residual spread, so every draw is the point
    assert pred["intervals"]["sources"] == [
        "residual resampling: one simulated run of this workload per draw"
    ]
    tpot = pred["intervals"]["metrics"]["median_tpot_ms"]
    assert tpot["low"] == pytest.approx(pred["metrics"]["median_tpot_ms"], rel=1e-6)
    assert tpot["high"] == pytest.approx(pred["metrics"]["median_tpot_ms"], rel=1e-6)


def test_predicted_capacity_then_one_confirming_run(tmp_path):
    """--find-capacity --predict --confirm: the search runs on the simulator, then exactly one real
    run (here a stand-in that writes a PASS summary) at the predicted capacity."""
    import dataclasses

    from harness.commands.run_options import CapacityOptions, OutputOptions, RunOptions
    from harness.commands.run_predict import find_capacity_predicted
    from harness.engines.options import LaunchOptions
    from harness.engines.registry import ENGINES
    from harness.results.atomic import atomic_write_json

    calib = _hand_run(tmp_path)
    overrides = [
        "parallel.tp=1",
        "parallel.pp=2",
        "cluster.gpus_per_node=2",
        "workload.num_requests=40",
        "run.max_batch=2",
        "workload.input_len={dist: fixed, value: 8}",
        "workload.output_len={dist: fixed, value: 4}",
        "slo.targets=[ttft_p99_ms <= 60]",
    ]
    spec = load_spec(DEMO_CONFIG, overrides)
    launched = []

    def fake_probe(probe_spec, probe_args):
        launched.append(probe_spec.workload.rate_rps)
        Path(probe_args.results_dir).mkdir(parents=True)
        atomic_write_json(
            Path(probe_args.results_dir) / "summary.json",
            {"complete": True, "verdict": "PASS", "metrics": {"request_throughput": 1.0}},
        )
        return 0

    options = RunOptions(
        LaunchOptions(DEMO_CONFIG, tuple(overrides), tmp_path / "cap"),
        OutputOptions(),
        CapacityOptions(predict=True, predict_from=str(calib), confirm=True),
    )
    entry = dataclasses.replace(ENGINES["reference"], serve=fake_probe)
    rc = find_capacity_predicted(spec, options, entry)
    cap = json.loads((tmp_path / "cap" / "capacity.json").read_text())
    verdicts = {p["workload.rate_rps"]: p["verdict"] for p in cap["probes"]}
    assert "FAIL" in verdicts.values() and verdicts[cap["capacity"]] == "PASS"
    assert launched == [cap["capacity"]]
    assert cap["confirm"]["verdict"] == "PASS" and cap["done"] is True and rc == 0
