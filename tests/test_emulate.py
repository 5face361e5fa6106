"""``harness emulate`` on CPU (tiny TP2-PP4 spec) and ``launch/gpu_check.sh`` on a machine without a GPU.

Hand numbers for the tiny spec (hidden h=64, 8 layers split 2/2/2/2, 4 heads / 2 KV heads of 16,
MLP 128, vocab 256, fp32 d=4, TP 2, run.max_batch 8):
  one layer: q,o 64·64 each, k,v 64·32 each, gate,up,down 64·128 each, 2 norms of 64 = 36992;
  a TP rank holds (36992 − 128)/2 + 128 = 18560 per layer -> 2 layers 37120;
  first stage + embedding shard 256·64/2 = 8192 -> 45312; last + lm_head shard 8192 + norm 64 -> 45376.
  Comm per decode step, B rows: activation B·1·64·4 = 256·B bytes; header 8·(4 + 3·8) = 224 bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import planner
from harness.cli import main as cli
from harness.comm import COMM_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny-tp2-pp4-cpu.yaml")
B = 2
SWEEP = ["--batches", str(B), "--contexts", "16", "--prefill", "8", "--iters", "1"]
FIRST, MIDDLE, LAST = 0, 2, 6


@pytest.fixture(scope="module")
def reports():
    """One --json emulation per rank type (first, middle, last), parsed."""
    out = {}
    for rank in (FIRST, MIDDLE, LAST):
        r = subprocess_free_cli(["emulate", TINY, "--rank", str(rank), "--json", *SWEEP])
        out[rank] = r
    return out


def subprocess_free_cli(argv: list[str]) -> dict:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(argv)
    assert rc == 0
    return json.loads(buf.getvalue())    # --json prints valid JSON and nothing else


def test_params_built_are_the_ranks_share(reports):
    want = {FIRST: 45312, MIDDLE: 37120, LAST: 45376}
    for rank, r in reports.items():
        (rk,) = r["ranks"]
        assert rk["params"] == want[rank]
        assert rk["params_expected"] == want[rank]
        assert rk["param_bytes"] == 4 * want[rank]
        assert rk["kind"] == {FIRST: "first", MIDDLE: "middle", LAST: "last"}[rank]


def test_decode_comm_bytes_hand_formula(reports):
    act, hdr = 256 * B, 224
    want = {
        # first: 2·2 layers + 1 embedding all-reduces; header + B token ids broadcast to the TP peer;
        # header + hidden sent to stage 1; header + B sampled tokens received back from the last stage.
        FIRST: {"all_reduce:tp": {"count": 5, "bytes": 5 * act}, "broadcast:tp": {"count": 2, "bytes": hdr + 8 * B},
                "send:pp": {"count": 2, "bytes": hdr + act}, "recv:pp": {"count": 2, "bytes": hdr + 8 * B}},
        MIDDLE: {"all_reduce:tp": {"count": 4, "bytes": 4 * act}, "recv:pp": {"count": 2, "bytes": hdr + act},
                 "send:pp": {"count": 2, "bytes": hdr + act}},
    }
    for rank, expected in want.items():
        (pt,) = reports[rank]["ranks"][0]["decode"]
        assert pt["comm"] == expected
    last = reports[LAST]["ranks"][0]["decode"][0]["comm"]
    assert last["all_reduce:tp"] == {"count": 4, "bytes": 4 * act}
    assert last["recv:pp"] == {"count": 2, "bytes": hdr + act}
    assert last["send:pp"] == {"count": 2, "bytes": hdr + 8 * B}     # tokens back to the coordinator


def test_comm_matches_planner_first_and_middle(reports):
    for rank in (FIRST, MIDDLE):
        for pt in reports[rank]["ranks"][0]["decode"] + reports[rank]["ranks"][0]["prefill"]:
            assert pt["comm"] == pt["comm_expected"], (rank, pt["phase"])


def test_last_stage_sampling_gather_matches_planner(reports):
    """The planner is the reference for the sampling all-gathers (planner.sampling_gather_ops)."""
    for pt in reports[LAST]["ranks"][0]["decode"] + reports[LAST]["ranks"][0]["prefill"]:
        want = sum(b for _, b in planner.sampling_gather_ops(pt["batch"]))
        assert pt["comm"]["all_gather:tp"] == {"count": len(planner.sampling_gather_ops(1)), "bytes": want}


def test_recorder_rows_have_a_real_runs_shape(reports):
    rows = reports[FIRST]["ranks"][0]["comm_rows"]
    assert [list(r) for r in rows] == [list(COMM_COLUMNS)] * len(rows)
    assert all(r["rank"] == FIRST and r["phase"] == "decode" for r in rows)
    assert [r["op"] for r in rows][:3] == ["broadcast", "broadcast", "all_reduce"]
    assert all(r["group_size"] == 2 and r["t_start_s"] is None for r in rows)   # recorded, never run
    assert {r["dtype"] for r in rows if r["op"] == "all_reduce"} == {"float32"}


def test_points_are_measured_and_checked(reports):
    for r in reports.values():
        assert r["device"]["type"] == "cpu" and "CPU" in r["device"]["note"]
        assert r["peaks"]["copy_gbps"] > 0 and r["peaks"]["matmul_tflops"] > 0
        (rk,) = r["ranks"]
        (dec,), (pre,) = rk["decode"], rk["prefill"]
        assert dec["check"] == "ok (exact)"                          # StaticStep (the graph's body) == forward
        assert (dec["batch"], dec["tokens"], dec["context"]) == (B, 1, 16)
        assert (pre["batch"], pre["tokens"], pre["context"]) == (1, 8, 0)
        for pt in (dec, pre):
            assert pt["step_s"] > 0 and pt["mode"] == "eager" and pt["iters"] == 1
            assert pt["gbps"] == pytest.approx(pt["bytes"] / pt["step_s"] / 1e9)
            assert pt["tflops"] == pytest.approx(pt["flops"] / pt["step_s"] / 1e12)
        # bytes: the middle rank's weights (37120·4) + KV of 17 positions: 2·2 layers·1 head·16·4 = 256 B/token/row
        if rk["rank"] == MIDDLE:
            assert dec["bytes"] == 37120 * 4 + B * 17 * 256


def test_projection_fields_exist_and_are_positive(reports):
    for rank, r in reports.items():
        p, a = r["projection"], r["analytic"]
        assert p["label"] == "projection" and "measured on CPU" in p["basis"]
        assert a["label"] == "analytic floor"
        for key in ("tpot_floor_s", "tpot_at_rows_s", "ttft_floor_s", "e2e_floor_s", "rps_bound"):
            assert p[key] > 0 and a[key] > 0, key
        assert len(p["decode_step_s"]) == 4 and all(x > 0 for x in p["decode_step_s"])
        assert r["stage_sources"][str(r["ranks"][0]["stage"])] == "measured"
        assert sum(v == "measured" for v in r["stage_sources"].values()) == 1


def test_text_report_labels_cpu_and_projection(capsys):
    assert cli(["emulate", TINY, "--stage", "1", *SWEEP]) == 0
    out = capsys.readouterr().out
    assert "CPU numbers: not a GPU measurement" in out
    assert "PROJECTION" in out and "rank 2 (middle stage 1, tp 0)" in out


@pytest.mark.parametrize("argv, says", [
    (["--rank", "8"], "--rank: 8 is outside 0..7"),
    (["--stage", "4"], "--stage: 4 is outside 0..3"),
    (["--rank", "0", "--stage", "1"], "not allowed with argument"),
    (["--batches", "2,x"], "comma-separated"),
    (["--contexts", "512"], "--contexts: 512 is out of range"),
])
def test_bad_flags_exit_2_with_one_line(capsys, argv, says):
    try:
        rc = cli(["emulate", TINY, *argv])
    except SystemExit as e:      # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and err.count("\n") == 1, err


def test_recording_comm_issues_nothing_for_a_group_of_one():
    import torch
    from harness.emulate import rank_comm
    from harness.layout import Layout
    comm = rank_comm(Layout(1, 2, 1, (1, 1)), 1)
    comm.rec.level = "counts"
    t = torch.ones(3)
    assert comm.all_reduce(t) is t and comm.all_gather(t) == [t]
    comm.send(t, 0)
    assert [(r[3], r[4], r[5], r[6], r[9]) for r in comm.rec.rows] == [("send", "pp", 2, 0, 12)]


def test_measured_compute_interpolates_and_scales():
    from harness.emulate import MeasuredTiming, Point, RankResult, measured_compute
    from harness.spec import load_spec
    spec = load_spec(TINY)
    res = RankResult(0, 0, 0, "first", [0, 1], 1, 1, 4, 0.0,
                     decode=[Point("decode", 1, 1, 10, step_s=1.0), Point("decode", 4, 1, 10, step_s=2.5),
                             Point("decode", 1, 1, 30, step_s=2.0), Point("decode", 4, 1, 30, step_s=3.5)],
                     prefill=[Point("prefill", 1, 100, 0, step_s=0.5)])
    assert measured_compute(res, 2, 1, 10) == pytest.approx(1.5)       # linear in batch
    assert measured_compute(res, 2, 1, 20) == pytest.approx(2.0)       # then in context
    assert measured_compute(res, 8, 1, 10) == pytest.approx(4.5)       # extended past the last batch
    assert measured_compute(res, 1, 300, 0) == pytest.approx(1.5)      # one prefill point: proportional
    base = planner.Timing(spec.shape, spec.layout, spec.gpu, 4, 8, planner.links(spec.layout, spec.gpu, 8))
    tm = MeasuredTiming(spec.shape, spec.layout, spec.gpu, 4, 8, base.links, measured={0: res})
    assert tm.compute(0, 2, 1, 10) == pytest.approx(1.5)
    assert tm.source(2) == 0
    assert tm.compute(2, 2, 1, 10) == pytest.approx(1.5 * base.compute(2, 2, 1, 10) / base.compute(0, 2, 1, 10))


def test_gpu_check_on_a_machine_without_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "launch" / "gpu_check.sh"), str(tmp_path / "gc")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert "no GPU" in proc.stdout
    data = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert data["gpu"] is False
    assert data["peaks"]["copy_gbps"] == "not measured" and data["peaks"]["matmul_tflops"] == "not measured"
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["versions"]["status"] == "ok" and steps["emulate-tiny"]["status"] == "ok"
    assert data["emulation"]["tiny"]["ranks"] and data["versions"]["torch"]
    md = (tmp_path / "gc" / "gpu_check.md").read_text()
    assert "not measured" in md and "no GPU" in md
