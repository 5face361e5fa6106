"""``harness sweep``: candidates, the load ladder and its knee, the Pareto front, the best layout
under the SLOs, the forecast error, and the sweep folder (resume, Ctrl-C) through the verb with a
stand-in engine; one slow test sweeps 2 real layouts × 2 loads on the CPU twin."""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext

import pytest

from demo_run import DEMO_CONFIG
from harness.errors import UsageError
from harness.spec.spec import load_spec
from harness.sweep.candidates import LayoutKey, candidates, parse_name
from harness.sweep.ladder import Ladder, LoadPoint, knee, ladder
from harness.sweep.pareto import Point, advantage, baseline, best_under_slo, pareto_front
from harness.sweep.predicted import forecast_errors, score


def _spec(*overrides):
    return load_spec(DEMO_CONFIG, list(overrides))


# ---------------------------------------------------------------- candidates


def test_auto_candidates_are_the_tiny_models_layouts_its_heads_allow():
    """tiny: 4 heads, 2 KV heads, 8 layers on 8 GPUs: tp ∈ {1, 2} (tp=4 does not divide 2 KV
    heads), every pp·dp that makes 8."""
    c = candidates(_spec(), "auto")
    names = [k.name for k in c.keys]
    assert names == [
        "tp1-pp1-dp8",
        "tp1-pp2-dp4",
        "tp1-pp4-dp2",
        "tp1-pp8",
        "tp2-pp1-dp4",
        "tp2-pp2-dp2",
        "tp2-pp4",
    ]
    assert c.spec_key == LayoutKey(2, 4, 1)
    # 16 GPUs: pp=16 has more stages than the 8 layers
    c16 = candidates(_spec("cluster.gpus_per_node=16", "parallel.dp=2"), "auto")
    assert "tp1-pp16" not in [k.name for k in c16.keys] and "tp1-pp8-dp2" in [
        k.name for k in c16.keys
    ]
    with pytest.raises(
        UsageError, match=r"tp4-pp2 cannot run: tp=4 does not divide KV heads \(2\)"
    ):
        candidates(_spec(), "tp2-pp4,tp4-pp2")
    with pytest.raises(UsageError, match="tp1-pp16 cannot run: pp=16 > 8 layers"):
        candidates(_spec("cluster.gpus_per_node=16", "parallel.dp=2"), "tp1-pp16")
    with pytest.raises(UsageError, match="tp2-pp2 uses 4 GPUs but the cluster has 8"):
        candidates(_spec(), "tp2-pp2")
    # a list keeps its order and always holds the spec's own layout
    assert [k.name for k in candidates(_spec(), "tp1-pp8").keys] == ["tp1-pp8", "tp2-pp4"]


def test_layout_names_read_back_and_set_the_spec():
    for name, key in [
        ("tp2-pp4", (2, 4, 1)),
        ("tp2-pp2-dp2", (2, 2, 2)),
        ("tp8", (8, 1, 1)),
        ("tp1-pp1-dp8", (1, 1, 8)),
    ]:
        k = parse_name(name)
        assert (k.tp, k.pp, k.dp) == key and k.name == name
    with pytest.raises(UsageError, match="'pp4' is not a layout"):
        parse_name("pp4")
    spec = _spec("parallel.layer_split=[1,3,3,1]")
    s = load_spec(
        DEMO_CONFIG, ["parallel.layer_split=[1,3,3,1]", *parse_name("tp1-pp8").overrides(spec)]
    )
    assert (s.layout.tp, s.layout.pp, s.layout.dp) == (1, 8, 1) and s.layout.layer_split == (1,) * 8
    own = parse_name("tp2-pp4").overrides(spec)
    assert "parallel.layer_split=null" not in own  # the spec's own split stays on its own layout


# ---------------------------------------------------------------- ladder and knee


def test_ladder_reads_lists_and_auto_on_the_specs_axis():
    lad = ladder(_spec(), "8,2,4,4")
    assert lad == Ladder("workload.rate_rps", False, (2.0, 4.0, 8.0), False)
    assert lad.label(2.0) == "rate-2" and lad.label(0.5) == "rate-0.5"
    auto = ladder(_spec(), "auto")
    assert auto.loads == (4.0, 8.0, 16.0, 32.0, 64.0) and auto.auto
    closed = ladder(_spec("workload.arrival=closed", "workload.concurrency=3"), "auto")
    assert closed.field == "workload.concurrency" and closed.loads == (3, 6, 12, 24, 48)
    assert closed.label(6.0) == "concurrency-6"
    for bad in ("0", "-1", "x", "inf", ""):
        with pytest.raises(UsageError, match="--loads"):
            ladder(_spec(), bad)
    with pytest.raises(UsageError, match="positive integers"):
        ladder(_spec("workload.arrival=closed", "workload.concurrency=3"), "2.5")


def test_knee_where_throughput_stops_rising_and_latency_climbs():
    pts = [
        LoadPoint(1, 1.0, 100),
        LoadPoint(2, 1.95, 110),
        LoadPoint(4, 2.9, 180),
        LoadPoint(8, 3.0, 900),
        LoadPoint(16, 3.0, 2000),
    ]
    assert knee(pts) == 4  # 4 -> 8: +3.4 % throughput, +400 % latency
    assert knee(pts[:3]) is None  # still rising
    # throughput flat but latency flat too (under-loaded noise): no knee
    assert knee([LoadPoint(1, 1.0, 100), LoadPoint(2, 1.02, 105)]) is None
    auto = Ladder("workload.rate_rps", False, (1, 2, 4, 8, 16), True)
    assert auto.next_load(pts[:2]) == 4 and auto.next_load(pts[:4]) is None
    listed = dataclasses.replace(auto, auto=False)
    assert listed.next_load(pts[:4]) == 16  # a listed ladder runs every load


# ---------------------------------------------------------------- Pareto, best, advantage


def _pt(layout, load, per_gpu, per_user, verdict="PASS", good=None, lo=None, hi=None):
    return Point(
        layout,
        load,
        8,
        verdict,
        f"{layout}/{load}",
        per_gpu,
        None,
        None,
        per_user,
        None,
        None,
        good,
        lo,
        hi,
        48,
    )


def test_pareto_front_best_under_slo_and_advantage():
    pts = [
        _pt("a", 1, 10.0, 50.0, good=0.20, lo=0.15, hi=0.25),
        _pt("a", 2, 18.0, 40.0, good=0.30, lo=0.25, hi=0.35),
        _pt("b", 1, 9.0, 45.0, good=0.18),  # dominated by a@1
        _pt("b", 2, 25.0, 20.0, "INCONCLUSIVE", good=0.60),  # on the front, not feasible
        _pt("c", 1, 18.0, 40.0, "FAIL", good=0.10),  # ties a@2: not strictly dominated
    ]
    front = [(p.layout, p.load) for p in pareto_front(pts)]
    assert front == [("b", 2), ("a", 2), ("c", 1), ("a", 1)]
    best = best_under_slo(pts)
    assert (best.layout, best.load) == ("a", 2)  # b@2 has more goodput but did not PASS
    assert best_under_slo([p for p in pts if p.verdict != "PASS"]) is None
    base, ok = baseline(pts, "b")
    assert (base.layout, base.load, ok) == ("b", 1, True)
    base_c, ok_c = baseline(pts, "c")
    assert (base_c.load, ok_c) == (1, False)
    # a@2 over a@1: 0.30/0.20 - 1 = +50 %; MOVER on logs: ln 1.5 ± hypot(ln(.30/.25), ln(.25/.20))
    import math

    adv = advantage(pts[1], pts[0], 0.95)
    assert adv["pct"] == pytest.approx(50.0) and adv["ratio"] == pytest.approx(1.5)
    half_lo = math.hypot(math.log(0.30 / 0.25), math.log(0.25 / 0.20))
    assert adv["low_pct"] == pytest.approx((1.5 * math.exp(-half_lo) - 1) * 100)
    assert adv["low_pct"] < 50.0 < adv["high_pct"]


def test_forecast_error_and_ranking_score():
    sim = [
        {
            "load": 1,
            "verdict": "PASS",
            "output_throughput": 11.0,
            "mean_tpot_ms": 90.0,
            "median_e2el_ms": 1000.0,
            "request_goodput": 1.0,
            "goodput_per_gpu": 0.125,
            "per_gpu": 1.4,
        },
        {
            "load": 2,
            "verdict": "FAIL",
            "output_throughput": 24.0,
            "mean_tpot_ms": 150.0,
            "median_e2el_ms": 3000.0,
            "request_goodput": 0.5,
            "goodput_per_gpu": 0.0625,
            "per_gpu": 3.0,
        },
    ]
    measured = {
        1: {
            "output_throughput": 10.0,
            "mean_tpot_ms": 100.0,
            "median_e2el_ms": 1000.0,
            "request_goodput": 1.0,
        },
        2: {
            "output_throughput": 20.0,
            "mean_tpot_ms": 120.0,
            "median_e2el_ms": 2000.0,
            "request_goodput": 0.0,
        },
    }
    fe = forecast_errors(sim, measured, calibration_load=1)
    assert fe["loads"][0]["in_sample"] and fe["loads"][0]["error"][
        "output_throughput"
    ] == pytest.approx(0.1)
    m = fe["mean_abs_out_of_sample"]
    assert m["output_throughput"] == pytest.approx(0.2) and m["mean_tpot_ms"] == pytest.approx(0.25)
    assert m["median_e2el_ms"] == pytest.approx(0.5) and m["request_goodput"] is None  # 0 measured
    assert fe["n_out_of_sample"] == 1
    assert score(sim, {}, 8) == (0.125, 3.0, pytest.approx(score(sim, {}, 8)[2]))
    assert score(None, {"capacity_rps": 80.0}, 8)[:2] == (10.0, 0.0)


# ---------------------------------------------------------------- the verb: folder, resume, Ctrl-C


class StandIn:
    """A stand-in system under test for the verb's bookkeeping: each layout serves
    ``speed[layout]`` requests/s at most; a run writes the summary a real one would (metrics,
    intervals, verdict: PASS while the rate is within the layout's speed)."""

    speed = {(2, 4, 1): 3.0, (1, 8, 1): 5.0, (2, 2, 2): 9.0}

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.interrupt_at = interrupt_at

    def serve(self, spec, options):
        lay = (spec.layout.tp, spec.layout.pp, spec.layout.dp)
        rate = spec.workload.rate_rps
        self.calls.append((*lay, rate))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            options.results_dir.mkdir(parents=True)
            (options.results_dir / "summary.json").write_text('{"complete": false}')
            raise KeyboardInterrupt
        thr = min(rate, self.speed[lay])
        ok = rate <= self.speed[lay]
        metrics = {
            "request_throughput": thr,
            "output_throughput": 16 * thr,
            "request_goodput": thr if ok else 0.0,
            "mean_tpot_ms": 50.0 * rate,
            "median_e2el_ms": 800.0 * (1 if ok else 4),
            "completed": 48,
        }
        iv = {k: {"low": 0.8 * v, "high": 1.2 * v} for k, v in metrics.items()}
        options.results_dir.mkdir(parents=True)
        summary = {
            "complete": True,
            "verdict": "PASS" if ok else "FAIL",
            "slo": [],
            "metrics": metrics,
            "intervals": {"metrics": iv},
        }
        (options.results_dir / "summary.json").write_text(json.dumps(summary))
        return 0


def _sweep(monkeypatch, tmp_path, stand_in, *extra):
    from harness.cli import main
    from harness.engines import registry

    entry = dataclasses.replace(
        registry.ENGINES["reference"], probes=lambda spec, options: nullcontext(stand_in.serve)
    )
    monkeypatch.setitem(registry.ENGINES, "reference", entry)
    args = [
        "sweep",
        str(DEMO_CONFIG),
        "--layouts",
        "tp2-pp4,tp1-pp8",
        "--loads",
        "2,4",
        "--calibrate",
        "none",
        "--results-dir",
        str(tmp_path / "sw"),
        *extra,
    ]
    return main(args)


def test_the_sweep_names_the_best_layout_and_resumes_every_finished_run(tmp_path, monkeypatch):
    from harness.cli import main

    first = StandIn()
    assert _sweep(monkeypatch, tmp_path, first) == 0
    assert sorted(first.calls) == [(1, 8, 1, 2.0), (1, 8, 1, 4.0), (2, 4, 1, 2.0), (2, 4, 1, 4.0)]
    root = tmp_path / "sw"
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["complete"] is True and doc["spec_layout"] == "tp2-pp4"
    assert [e["name"] for e in doc["layouts"]] == ["tp2-pp4", "tp1-pp8"]
    # tp1-pp8 passes at 4 req/s (4 of goodput / 8 GPUs); tp2-pp4 only at 2 (its 4 fails)
    assert (doc["best"]["layout"], doc["best"]["load"]) == ("tp1-pp8", 4.0)
    assert doc["best"]["goodput_per_gpu"] == pytest.approx(0.5)
    assert doc["baseline"]["layout"] == "tp2-pp4" and doc["baseline"]["load"] == 2.0
    assert doc["advantage"]["pct"] == pytest.approx(100.0)
    assert doc["advantage"]["low_pct"] < 100.0 < doc["advantage"]["high_pct"]
    run = doc["layouts"][1]["runs"][1]
    assert run["run_dir"] == str(root / "tp1-pp8" / "rate-4") and run["reused"] is False
    assert (root / "tp1-pp8" / "rate-4" / "summary.json").is_file()
    report = (root / "report.md").read_text()
    assert "Best under the SLOs: tp1-pp8" in report and (root / "pareto.png").stat().st_size > 1000
    assert "parallel: tp=1, pp=8, dp=1" in report and (root / "report.html").is_file()

    (root / "report.md").unlink()
    assert main(["report", str(root)]) == 0 and "tp1-pp8" in (root / "report.md").read_text()

    # the same command again: every run reused, nothing served
    again = StandIn()
    assert _sweep(monkeypatch, tmp_path, again) == 0 and again.calls == []
    doc2 = json.loads((root / "sweep.json").read_text())
    assert all(r["reused"] for e in doc2["layouts"] for r in e["runs"])
    assert doc2["best"] == doc["best"]

    # one run left unfinished: only it runs again
    (root / "tp2-pp4" / "rate-4" / "summary.json").write_text('{"complete": false}')
    third = StandIn()
    assert _sweep(monkeypatch, tmp_path, third) == 0 and third.calls == [(2, 4, 1, 4.0)]

    # other arguments in the same folder: refused before anything runs
    other = StandIn()
    assert _sweep(monkeypatch, tmp_path, other, "--top", "1") == 2 and other.calls == []

    # the same arguments but the config file edited since: another sweep, refused
    from harness.commands.sweep import SweepOptions
    from harness.sweep.state import open_root

    cfg = tmp_path / "c.yaml"
    cfg.write_text(DEMO_CONFIG.read_text())
    opts = SweepOptions(cfg, "auto", "auto", None, 2, None, None, ())
    before = opts.args()
    open_root(tmp_path / "other", before)
    (tmp_path / "other" / "sweep.json").write_text(
        json.dumps({"kind": "harness.sweep/1", "args": before})
    )
    cfg.write_text(DEMO_CONFIG.read_text().replace("rate_rps: 4", "rate_rps: 5"))
    with pytest.raises(UsageError, match=r"other arguments \(config_sha256\)"):
        open_root(tmp_path / "other", opts.args())


def test_ctrl_c_leaves_the_sweep_marked_incomplete_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    stopped = StandIn(interrupt_at=3)
    assert _sweep(monkeypatch, tmp_path, stopped) == 3
    root = tmp_path / "sw"
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["complete"] is False and doc["stopped"] == "interrupted (Ctrl-C)"
    assert sum(len(e["runs"]) for e in doc["layouts"]) == 2
    rest = StandIn()
    assert _sweep(monkeypatch, tmp_path, rest) == 0 and len(rest.calls) == 2  # the two not done
    assert json.loads((root / "sweep.json").read_text())["complete"] is True


# ---------------------------------------------------------------- the real thing, small


@pytest.mark.slow
def test_two_real_layouts_two_loads_calibrated_per_layout_then_resumed(tmp_path):
    """The CPU twin, tp2-pp4 (the spec's) and tp2-pp2-dp2 at 2 and 4 req/s, 8 requests a run,
    --top 0: each layout's calibration run at 2 req/s calibrates its simulator, which forecasts
    both loads and ranks the two; only the spec's own layout runs 4 req/s (three worlds), and its
    forecast there is checked against the measurement; the best layout under a p50 TPOT target
    (decidable from 8 requests) is named with its advantage. Run again: every run reused, no
    world starts."""
    import subprocess
    import sys
    import time

    from demo_run import REPO, assert_verdict_exit

    root = tmp_path / "sw"
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "sweep",
        str(DEMO_CONFIG),
        "--layouts",
        "tp2-pp4,tp2-pp2-dp2",
        "--loads",
        "2,4",
        "--top",
        "0",
        "--results-dir",
        str(root),
        "--set",
        "workload.num_requests=8",
        "--set",
        "run.warmup_requests=1",
        "--set",
        "slo.targets=[p50_tpot_ms <= 5000]",
        "--set",
        "slo.goodput={ttft: 20000, tpot: 5000}",
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["complete"] is True and doc["calibrate"] == "per-layout"
    runs = {(e["name"], r["load"]): r for e in doc["layouts"] for r in e["runs"]}
    assert sorted(runs) == [("tp2-pp2-dp2", 2.0), ("tp2-pp4", 2.0), ("tp2-pp4", 4.0)]
    assert [r["selected"] for r in doc["ranking"] if r["layout"] == "tp2-pp4"] == [True]
    for (name, load), r in runs.items():
        assert r["phase"] == ("calibration" if load == 2.0 else "ladder") and not r["reused"]
        summary = assert_verdict_exit(r["exit_code"], root / name / f"rate-{load:g}")
        assert summary["layout"]["tp"] == 2 and summary["metrics"]["completed"] == 8
        assert r["point"]["per_gpu"] == pytest.approx(summary["metrics"]["output_throughput"] / 8)
    for e in doc["layouts"]:
        pred = e["predicted"]
        assert pred["calibration_load"] == 2.0 and pred["calibrated_on"].endswith("rate-2")
        assert 0.5 <= pred["closure"]["factor"] <= 2.0
        assert [q["load"] for q in pred["points"]] == [2.0, 4.0]
    own = next(e for e in doc["layouts"] if e["name"] == "tp2-pp4")
    assert own["forecast_error"]["n_out_of_sample"] == 1
    err = own["forecast_error"]["loads"][1]["error"]["output_throughput"]
    measured = runs[("tp2-pp4", 4.0)]["metrics"]["output_throughput"]
    assert err == pytest.approx(own["predicted"]["points"][1]["output_throughput"] / measured - 1)
    assert doc["best"]["verdict"] == "PASS" and doc["advantage"]["base"]["layout"] == "tp2-pp4"
    assert (root / "pareto.png").is_file() and "## Forecast error per layout" in (
        root / "report.md"
    ).read_text()

    t0 = time.monotonic()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    doc2 = json.loads((root / "sweep.json").read_text())
    assert all(r["reused"] for e in doc2["layouts"] for r in e["runs"])
    assert doc2["best"] == doc["best"] and time.monotonic() - t0 < 60


def test_only_the_top_k_and_the_specs_layout_run_the_ladder(tmp_path, monkeypatch):
    """--top 1 over three layouts, ranked by the planner (--calibrate none): the planner's
    first (tp1-pp8, bound 22,669 req/s) and the spec's own run; tp2-pp2-dp2 (second, 21,064)
    runs nothing, though it would have been the fastest: the ranking decides."""
    s = StandIn()
    assert (
        _sweep(monkeypatch, tmp_path, s, "--layouts=tp2-pp4,tp1-pp8,tp2-pp2-dp2", "--top", "1") == 0
    )
    assert sorted({c[:3] for c in s.calls}) == [(1, 8, 1), (2, 4, 1)]
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [(r["layout"], r["selected"]) for r in doc["ranking"]] == [
        ("tp1-pp8", True),
        ("tp2-pp2-dp2", False),
        ("tp2-pp4", True),
    ]
    assert doc["ranking"][0]["basis"].startswith("planner")
    assert [e["runs"] for e in doc["layouts"] if e["name"] == "tp2-pp2-dp2"] == [[]]


def test_vllm_one_server_per_layout_reused_across_its_loads(tmp_path, monkeypatch):
    """--engine vllm: the engine's ``probes`` context (one vLLM server) is entered once per layout
    and serves all of that layout's loads; the layouts are ranked by the planner (vLLM records no
    step tables to calibrate on: --calibrate per-layout is refused, exit 2)."""
    from contextlib import contextmanager

    from harness.cli import main
    from harness.engines import registry

    stand_in, servers = StandIn(), []

    @contextmanager
    def probes(spec, options):
        servers.append((spec.layout.tp, spec.layout.pp, spec.layout.dp, options.results_dir))
        yield stand_in.serve

    entry = dataclasses.replace(
        registry.ENGINES["vllm"], preflight=lambda spec, options: None, probes=probes
    )
    monkeypatch.setitem(registry.ENGINES, "vllm", entry)
    root, model = tmp_path / "sw", tmp_path / "model"
    model.mkdir()
    hf = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 8,
        "head_dim": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 512,
        "max_position_embeddings": 512,
    }
    (model / "config.json").write_text(json.dumps(hf))
    args = [
        "sweep",
        str(DEMO_CONFIG),
        "--engine",
        "vllm",
        "--layouts",
        "tp2-pp4,tp1-pp8",
        "--loads",
        "2,4",
        "--set",
        "model.preset=null",
        "--set",
        f"model.config={model}",
        "--results-dir",
        str(root),
    ]
    assert main(args) == 0
    assert sorted(servers) == [(1, 8, 1, root / "tp1-pp8"), (2, 4, 1, root / "tp2-pp4")]
    assert len(stand_in.calls) == 4
    doc = json.loads((root / "sweep.json").read_text())
    assert doc["calibrate"] == "none" and doc["args"]["engine"] == "vllm"
    assert (
        main([*args[:-2], "--calibrate", "per-layout", "--results-dir", str(tmp_path / "x")]) == 2
    )


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--loads", "x"], "--loads"),
        (["--top", "-1"], "--top"),
        (["--layouts", "tp4-pp2"], "--layouts: tp4-pp2 cannot run"),
        (["--layouts", "tp2"], "--layouts: tp2 uses 2 GPUs"),
        (["--set", "workload.rate_rps=-1"], "workload.rate_rps"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, flags, field):
    from harness.cli import main

    out = tmp_path / "sw"
    assert main(["sweep", str(DEMO_CONFIG), "--results-dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1 and not out.exists()


def test_a_forecast_whose_closure_hit_its_bound_is_flagged_in_the_ranking():
    from harness.report.sweep_section import caveat

    assert "unreliable" in caveat({"predicted": {"closure": {"factor": 0.5}}})
    assert caveat({"predicted": {"closure": {"factor": 1.1}}}) == ""
    assert caveat({"predicted": {"refused": "no steps table"}}) == "no forecast: no steps table"
