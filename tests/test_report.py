"""The report (markdown sections, HTML references, PNG plots), the deployment DAG and the
nodes-to-modify rules: on a real CPU demo run and on synthetic runs for each rule."""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import pytest

from harness.cli import main as cli
from harness.report import plots
from harness.report.dag import build_dag, dag_from_run, node_count
from harness.report.dag_io import to_dot, topological_order, write_dag
from harness.report.modify import (
    Evidence,
    _max_concurrent,
    best_split,
    evidence_from_run,
    moves,
    recommend,
)
from harness.report.render import PLOT_FILES, write_report
from harness.results.reader import load_run
from harness.results.summary import new_summary
from harness.results.writer import RunWriter
from harness.spec.layout import Layout
from run_fixtures import SynthRun, build_synthetic_run, real_cpu_run

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "Hardware",
    "Memory",
    "Performance vs SLOs",
    "Load balancing",
    "TP groups",
    "PP stages",
    "Communication nodes",
    "DAG",
    "Nodes to modify",
)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return real_cpu_run(tmp_path_factory)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build_synthetic_run(tmp_path_factory.mktemp("rep") / "run")


# ---------------------------------------------------------------- report files


def check_report(run_dir: Path, sections=SECTIONS) -> str:
    md = (run_dir / "report.md").read_text()
    for s in sections:
        assert f"\n## {s}\n" in md, s
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(images) == sorted(f"plots/{f}" for f in PLOT_FILES.values())
    for rel in images:
        data = (run_dir / rel).read_bytes()
        assert data[:8] == PNG and len(data) > 3000, rel
    html = (run_dir / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    imgs = [r for r in refs if r.startswith("data:")]
    assert len(imgs) == len(PLOT_FILES)
    for r in refs:  # every reference is an in-page anchor, an embedded PNG, or a file that exists
        if r.startswith("#"):
            assert f'id="{r[1:]}"' in html
        elif r.startswith("data:image/png;base64,"):
            assert base64.b64decode(r.split(",", 1)[1])[:8] == PNG
        else:
            assert (run_dir / r).is_file(), r
    for rel in re.findall(r'data-file="([^"]+)"', html):
        assert (run_dir / rel).is_file()
    return md


def test_real_run_tables_and_summary(real):
    from test_results import _check_tables

    _check_tables(real, record_tokens=True)  # the shared demo run records tokens
    run = load_run(real)
    s = run.summary
    assert s["complete"] is True and s["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert s["schema_version"] == 1
    assert s["layout"]["tp"] == 2 and s["layout"]["pp"] == 4 and s["hardware"]["total_gpus"] == 8
    assert s["metrics"]["completed"] == 48 and len(run.requests) == 48 + 2
    assert set(run.comm["rank"]) == set(range(8)) and set(run.stages["rank"]) == set(range(8))
    assert set(run.memory["rank"]) == set(range(8)) and len(run.nvml) > 0
    assert (run.memory["param_bytes"] == run.memory["predicted_weight_bytes"]).all()


def test_real_run_report(real):
    assert cli(["report", str(real)]) == 0
    md = check_report(real)
    assert "CPU twin" in md and "Verdict:" in md
    assert (real / "dag.json").is_file() and (real / "dag.dot").read_text().startswith("digraph")


def test_real_run_dag(real, tmp_path):
    run = load_run(real)
    lay = run.layout()
    dag = dag_from_run(run)
    assert len(dag.nodes) == node_count(lay) == 88
    ids = {n.id for n in dag.nodes}
    assert len(ids) == len(dag.nodes)
    assert all(e.src in ids and e.dst in ids for e in dag.edges)
    assert len(topological_order(dag)) == len(ids)
    on_nodes = sum(n.bytes for n in dag.nodes if n.kind == "comm")
    assert dag.unmatched == [] and on_nodes == int(run.comm["bytes"].sum()) == dag.comm_table_bytes
    assert all(n.time_s is not None for n in dag.nodes if n.kind == "compute")
    jp, dp = write_dag(dag, tmp_path)
    j = json.loads(jp.read_text())
    assert j["node_count"] == j["node_count_formula"] == 88 and j["edge_count"] == len(dag.edges)
    assert j["comm_bytes_on_nodes"] == j["comm_table_bytes"] and j["comm_bytes_unmatched"] == 0
    assert dp.read_text().count(" -> ") == len(dag.edges)


def test_synthetic_report_sections_and_cli(synth, capsys):
    assert cli(["report", str(synth)]) == 0
    assert "report.html" in capsys.readouterr().out
    md = check_report(synth)
    assert "| GPUs used | 8 | 8 | agrees |" in md
    assert "| nodes | 88 | 88 | match |" in md
    assert "None needed" in md  # balanced enough: no split, m, TP/PP or KV change helps by >= 5 %


def test_gpu_run_report_shows_nvml_and_capacity(tmp_path):
    d = build_synthetic_run(tmp_path / "gpu", SynthRun(gpu="H100-SXM-80GB", steps=30))
    write_report(d)
    md = check_report(d)
    assert "CPU twin" not in md
    assert "| GPU utilisation (%) | — | 73 | measured only |" in md
    assert "85.5 GB" in md  # the H100's capacity in the memory table


def test_report_of_an_empty_incomplete_run(tmp_path, capsys):
    w = RunWriter(tmp_path / "killed")
    lay = {"tp": 2, "pp": 4, "dp": 1, "layer_split": [2, 2, 2, 2]}
    w.start(
        {"name": "k", "model": {"preset": "tiny"}},
        {},
        new_summary("k", {"gpu": "cpu", "total_gpus": 8, "backend": "gloo"}, lay),
    )
    assert cli(["report", str(w.dir)]) == 0
    md = check_report(w.dir)
    assert "Verdict: INCOMPLETE (the run did not finish" in md
    assert "not every rule could be judged" in md
    assert cli(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run directory" in err


def test_plots_say_no_data_instead_of_crashing(tmp_path):
    outs = [
        plots.plot_latency_cdfs({}, {}, tmp_path / "a.png"),
        plots.plot_throughput({"t_s": []}, tmp_path / "b.png"),
        plots.plot_memory([], None, "x", tmp_path / "c.png"),
        plots.plot_utilization({}, tmp_path / "d.png"),
        plots.plot_comm([], tmp_path / "e.png"),
        plots.plot_nvlink({}, tmp_path / "f.png"),
        plots.plot_pipeline([], 4, tmp_path / "g.png"),
        plots.plot_history([{}], [("x", "x")], tmp_path / "h.png"),
    ]
    for p in outs:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 2000


# ---------------------------------------------------------------- DAG on synthetic layouts


@pytest.mark.parametrize(
    "tp,pp,dp,split,expected",
    [
        (2, 4, 1, (2, 2, 2, 2), 88),  # 2·18 + 2·19 + (2·2·3 + 2)
        (2, 4, 1, (20, 20, 20, 20), 664),  # Llama3-70B TP2-PP4: 2·162 + 2·163 + 14
        (1, 1, 1, (8,), 18),  # 2·8 + 2
        (2, 1, 1, (8,), 74),  # 2·18 + 2·19
        (1, 4, 1, (2, 2, 2, 2), 26),  # 18 + 2·3 + 2
        (2, 2, 2, (4, 4), 2 * (36 + 38 + 6)),
    ],
)
def test_node_count_formula_by_hand(tp, pp, dp, split, expected):
    lay = Layout(tp, pp, dp, split)
    assert node_count(lay) == expected
    dag = build_dag(lay)
    assert len(dag.nodes) == expected
    ids = {n.id for n in dag.nodes}
    assert all(e.src in ids and e.dst in ids for e in dag.edges)
    assert len(topological_order(dag)) == expected
    assert to_dot(dag).count(" -> ") == len(dag.edges)


def test_synthetic_dag_bytes_and_times(synth):
    run = load_run(synth)
    dag = dag_from_run(run)
    assert dag.unmatched == []
    assert sum(n.bytes for n in dag.nodes if n.kind == "comm") == int(run.comm["bytes"].sum())
    # rank 0 issues 5 all-reduces per step (embedding + 2 layers x attn/mlp): equal shares
    ar = [n for n in dag.nodes if n.rank == 0 and n.op == "all_reduce"]
    assert len(ar) == 5 and len({n.bytes for n in ar}) == 1
    assert sum(n.bytes for n in ar) == int(
        run.comm[(run.comm["rank"] == 0) & (run.comm["op"] == "all_reduce")]["bytes"].sum()
    )
    # compute time of rank 2 = its stage compute minus its all-reduce time, split by parameters
    st = run.stages[run.stages["rank"] == 2]
    c = run.comm[(run.comm["rank"] == 2) & (run.comm["op"] == "all_reduce")]
    expect = float((st.t_compute_end_s - st.t_recv_end_s).sum() - (c.t_end_s - c.t_start_s).sum())
    got = sum(n.time_s for n in dag.nodes if n.rank == 2 and n.kind == "compute")
    assert got == pytest.approx(expect, rel=1e-9)
    mlp, attn = dag.node("r2.L2.mlp").time_s, dag.node("r2.L2.attn").time_s
    # tiny: params ratio
    assert mlp / attn == pytest.approx((3 * 64 * 128) / (64 * 64 * 2 + 64 * 32 * 2))
    assert any(
        e.kind == "p2p" and e.src == "r6.ret.send" and e.dst == "r0.ret.recv" for e in dag.edges
    )


# ---------------------------------------------------------------- nodes to modify


def brute_best(costs, extras, total):
    best = None
    for cut in itertools.combinations(range(1, total), len(costs) - 1):
        split = [b - a for a, b in zip((0,) + cut, cut + (total,))]
        t = max((s + e) * u for s, e, u in zip(split, extras, costs))
        best = t if best is None or t < best else best
    return best


def test_best_split_matches_brute_force_and_moves():
    assert best_split([1, 1, 2, 1], [0, 0, 0, 0], 8) == [3, 2, 1, 2]
    assert moves([2, 2, 2, 2], [3, 2, 1, 2]) == [
        "1 layer(s) from stage 1 to stage 0",
        "1 layer(s) from stage 2 to stage 1",
    ]
    for costs, extras, total in (
        ([1.65, 1.5, 3.0, 1.84], [0, 0, 0, 0.44], 8),
        ([1, 1, 1, 1.3], [0.2, 0, 0, 1.2], 80),
        ([2, 1, 1], [0, 0, 1], 9),
    ):
        split = best_split(costs, extras, total)
        assert sum(split) == total and min(split) >= 1
        got = max((s + e) * u for s, e, u in zip(split, extras, costs))
        assert got == pytest.approx(brute_best(costs, extras, total))


def _ev(**kw):
    base = dict(
        tp=2,
        pp=4,
        dp=1,
        layer_split=(2, 2, 2, 2),
        micro_batches=4,
        stage_step_s=[0.003] * 4,
        stage_send_step_s=[0.0001] * 4,
        extra_layers=[0, 0, 0, 0],
        bubble_ratio=0.05,
        tp_share=0.05,
        kv_slots=32,
        max_concurrent=5,
        queue_p90_ms=3.0,
    )
    base.update(kw)
    return Evidence(**base)


def test_balanced_measurements_need_no_change():
    adv = recommend(_ev())
    assert adv.none_needed and adv.changes == []
    assert adv.checked == ["layer_split", "micro_batches", "tp_pp", "kv_capacity"]


def test_missing_measurements_are_not_none_needed():
    adv = recommend(
        _ev(stage_step_s=[], bubble_ratio=None, tp_share=None, stage_send_step_s=[], kv_slots=None)
    )
    assert not adv.none_needed and set(adv.unjudged) == {
        "layer_split",
        "micro_batches",
        "tp_pp",
        "kv_capacity",
    }


def test_rule_layer_split():
    (c,) = recommend(_ev(stage_step_s=[0.002, 0.002, 0.004, 0.002])).changes
    assert c.rule == "layer_split"
    assert (
        "[2, 2, 2, 2] → [3, 2, 1, 2]" in c.change
        and "1 layer(s) from stage 2 to stage 1" in c.change
    )
    # slowest stage 4 ms → 3 ms
    assert "4.00 → 3.00 ms per step" in c.effect and "+33 %" in c.effect


def test_rule_layer_split_on_a_synthetic_run(tmp_path):
    d = build_synthetic_run(
        tmp_path / "slow2", SynthRun(stage_slowdown=(1, 1, 2, 1), steps=60, with_nvml=False)
    )
    ev = evidence_from_run(load_run(d))
    # per step: stage 0 = 2·1.5 + 0.3 ms (embedding), stage 2 = 2·1.5·2, stage 3 = 2·1.5 + 1.5
    # (lm_head)
    assert ev.stage_step_s == pytest.approx([0.0033, 0.003, 0.006, 0.0045])
    adv = recommend(ev)
    (c,) = [x for x in adv.changes if x.rule == "layer_split"]
    costs = [s / (n + e) for s, n, e in zip(ev.stage_step_s, ev.layer_split, ev.extra_layers)]
    new = best_split(costs, ev.extra_layers, 8)
    assert f"→ {new}" in c.change and new[2] == 1
    assert max((n + e) * u for n, e, u in zip(new, ev.extra_layers, costs)) == pytest.approx(
        brute_best(costs, ev.extra_layers, 8)
    )


def test_rule_more_micro_batches():
    (c,) = recommend(_ev(micro_batches=2, bubble_ratio=0.55)).changes
    assert c.change == "run.micro_batches: 2 → 4"
    assert "bubble 0.55 → 0.05" in c.effect and "+111 %" in c.effect  # (1-0.05)/(1-0.55) = 2.11


def test_rule_more_micro_batches_on_a_synthetic_run(tmp_path):
    d = build_synthetic_run(tmp_path / "m1", SynthRun(micro_batches=1, steps=40, with_nvml=False))
    adv = recommend(evidence_from_run(load_run(d)))
    assert [c.change for c in adv.changes if c.rule == "micro_batches"] == [
        "run.micro_batches: 1 → 4"
    ]


def test_rule_fewer_micro_batches_when_tpot_misses():
    (c,) = recommend(
        _ev(micro_batches=8, bubble_ratio=0.01, tpot_missed=True, tpot_p99_ms=300.0)
    ).changes
    assert c.change == "run.micro_batches: 8 → 4" and "TPOT p99 300 → 150 ms" in c.effect


def test_rule_tp_comm_dominates():
    (c,) = recommend(_ev(tp_share=0.5, num_layers=8)).changes
    assert "tp 2 → 1, pp 4 → 8" in c.change and "× 0.50" in c.effect and "gone" in c.effect
    (c,) = recommend(_ev(tp=4, tp_share=0.4, num_layers=80)).changes
    assert "tp 4 → 2" in c.change and "× 0.80" in c.effect  # 0.6 + 0.4/2


def test_rule_tp_comm_on_a_synthetic_run(tmp_path):
    d = build_synthetic_run(
        tmp_path / "ar", SynthRun(allreduce_s=0.0005, steps=40, with_nvml=False)
    )
    ev = evidence_from_run(load_run(d))
    # stage 1: 4 all-reduces x 0.5 ms in 3 ms of compute
    assert ev.tp_share == pytest.approx((5 * 0.5 / 3.3 + 4 * 0.5 / 3.0 * 2 + 4 * 0.5 / 4.5) / 4)
    assert any(c.rule == "tp_pp" and "tp 2 → 1" in c.change for c in recommend(ev).changes)


def test_rule_pp_comm_dominates():
    (c,) = recommend(_ev(stage_send_step_s=[0.003] * 4, kv_heads=8)).changes
    assert "tp 2 → 4, pp 4 → 2" in c.change and "−6.00 ms" in c.effect  # 2 fewer hops x 3 ms
    # tp 4 cannot split 2 KV heads
    assert recommend(_ev(stage_send_step_s=[0.003] * 4, kv_heads=2)).changes == []


def test_rule_kv_capacity():
    (c,) = recommend(
        _ev(
            kv_slots=8,
            max_concurrent=8,
            queue_p90_ms=400.0,
            queue_p99_ms=600.0,
            ttft_p99_ms=900.0,
            offered_rps=10.0,
            mean_service_s=1.5,
        )
    ).changes
    assert "KV slots per replica 8 → 18" in c.change  # ceil(1.2 · 10/s · 1.5 s)
    assert "TTFT p99 900 → ~300 ms" in c.effect
    # slots not all used
    assert recommend(_ev(kv_slots=8, max_concurrent=7, queue_p90_ms=400.0)).changes == []


def test_max_concurrent_by_hand():
    from harness.measure.metrics import RequestRecord as R

    recs = [
        R(0, 0, 0.0, 0.0, 0.1, [], 1.0),
        R(1, 0, 0.0, 0.5, 0.6, [], 1.5),
        R(2, 0, 0.0, 1.0, 1.1, [], 2.0),
        R(3, 0, 0.0, 1.2, None, [], None),
        R(4, 0, 0.0, None, None, [], None),
    ]
    # [0,1) [0.5,1.5) [1,2) [1.2,∞): at 1.2 three are in flight (the finish at 1.0 frees a slot
    # first)
    assert _max_concurrent(recs) == 3


def test_seed_claims_against_a_cpu_run_name_the_hardware_mismatch(synth, tmp_path):
    """The real harness.verdicts.claims on the seed report: H100 claims are not confirmed from a CPU
    run."""
    seed = tmp_path / "seed.md"
    seed.write_text(
        Path("/work/shared/seed/000_caabd6ac8876f5cc.txt").read_text()
        if Path("/work/shared/seed/000_caabd6ac8876f5cc.txt").exists()
        else SEED_FALLBACK
    )
    out = tmp_path / "out"
    write_report(synth, claims=str(seed), out_dir=out)
    md = (out / "report.md").read_text()
    check_report(out, SECTIONS + ("Claims",))
    # the claimed column in its section
    assert "| GPUs used | 8 | 8 | 8 | agrees; claim CONFIRMED |" in md
    claims = md.split("\n## Claims\n", 1)[1].split("\n## ", 1)[0]
    assert "| total_gpus | Total GPUs Required: 8" in claims
    assert "run not usable for hardware-dependent claims" in claims
    row = next(
        line for line in claims.splitlines() if line.startswith("| nvlink_utilization_pct |")
    )
    assert "UNVERIFIED" in row and "cpu" in row and "H100" in row
    assert "CONFIRMED | measured" not in claims


SEED_FALLBACK = """### Hardware Compatibility
- **Total GPUs Required**: 8 (2 TP × 4 PP × 1 DP × 1 EP)
- **Available GPUs**: 8x H100 (80GB each)
### Communication Nodes
- **NVLink Utilization**: 15% (excellent efficiency)
"""


def test_a_table_the_engine_did_not_produce_is_named_absent(synth, tmp_path):
    """An engine without a comm trace writes no comm.parquet: the reader names it, the report says
    so."""
    import shutil

    d = tmp_path / "no-comm"
    shutil.copytree(synth, d)
    (d / "comm.parquet").unlink()
    run = load_run(d)
    assert "comm" in run.absent and "requests" not in run.absent
    assert len(run.comm) == 0 and list(run.comm.columns)  # an empty frame with the schema's columns
    write_report(d)
    assert (
        "Communication not traced (reference engine: no comm table)."
        in (d / "report.md").read_text()
    )
    full = tmp_path / "with-comm"
    shutil.copytree(synth, full)
    write_report(full)
    assert "not traced" not in (full / "report.md").read_text()


def test_a_planner_floor_above_the_measured_median_is_flagged():
    from harness.report.sections import floor_errors

    bounds = {"tpot_floor_s": 0.050, "ttft_floor_s": 72.0, "e2e_floor_s": 1.0}
    metrics = {"median_tpot_ms": 80.0, "median_ttft_ms": 30_000.0, "median_e2el_ms": 900.0}
    assert floor_errors(bounds, metrics) == [
        "Planner error: the TTFT floor 7.2e+04 ms is above the measured median 3e+04 ms (the "
        "planner's device "
        "numbers or formula are off; see harness plan).",
        "Planner error: the E2E floor 1e+03 ms is above the measured median 900 ms (the planner's "
        "device "
        "numbers or formula are off; see harness plan).",
    ]
    assert floor_errors(bounds, {"median_tpot_ms": 80.0}) == []  # nothing measured: nothing claimed


def test_real_run_report_states_the_token_budget_and_no_planner_error(real):
    md = (real / "report.md").read_text() if (real / "report.md").exists() else None
    if md is None:
        assert cli(["report", str(real)]) == 0
        md = (real / "report.md").read_text()
    assert "Chunked prefill: at most 2048 tokens per micro-batch, decode rows first" in md
    assert "Planner error" not in md  # the CPU catalogue's ceilings are the host's measured ones
