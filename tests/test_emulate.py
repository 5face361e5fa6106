"""``harness emulate`` on CPU (tiny TP2-PP4 spec) and ``launch/gpu_check.sh`` on a machine without a
GPU.

Hand numbers for the tiny spec (hidden h=64, 8 layers split 2/2/2/2, 4 heads / 2 KV heads of 16,
MLP 128, vocab 256, fp32 d=4, TP 2, run.max_batch 8):
  one layer: q,o 64·64 each, k,v 64·32 each, gate,up,down 64·128 each, 2 norms of 64 = 36992;
  a TP rank holds (36992 − 128)/2 + 128 = 18560 per layer -> 2 layers 37120;
  first stage + embedding shard 256·64/2 = 8192 -> 45312; last + lm_head shard 8192 + norm 64 ->
  45376. Comm per decode step, B rows: activation B·1·64·4 = 256·B bytes; header 8·(4 + 3·8) = 224
  bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main as cli
from harness.engines.reference.comm import COMM_COLUMNS
from harness.plan import planner

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
    return json.loads(buf.getvalue())  # --json prints valid JSON and nothing else


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
        # first: 2·2 layers + 1 embedding all-reduces; header + B token ids broadcast to the TP
        # peer;
        # header + hidden sent to stage 1; header + B sampled tokens received back from the last
        # stage.
        FIRST: {
            "all_reduce:tp": {"count": 5, "bytes": 5 * act},
            "broadcast:tp": {"count": 2, "bytes": hdr + 8 * B},
            "send:pp": {"count": 2, "bytes": hdr + act},
            "recv:pp": {"count": 2, "bytes": hdr + 8 * B},
        },
        MIDDLE: {
            "all_reduce:tp": {"count": 4, "bytes": 4 * act},
            "recv:pp": {"count": 2, "bytes": hdr + act},
            "send:pp": {"count": 2, "bytes": hdr + act},
        },
    }
    for rank, expected in want.items():
        (pt,) = reports[rank]["ranks"][0]["decode"]
        assert pt["comm"] == expected
    last = reports[LAST]["ranks"][0]["decode"][0]["comm"]
    assert last["all_reduce:tp"] == {"count": 4, "bytes": 4 * act}
    assert last["recv:pp"] == {"count": 2, "bytes": hdr + act}
    assert last["send:pp"] == {"count": 2, "bytes": hdr + 8 * B}  # tokens back to the coordinator


def test_comm_matches_planner_first_and_middle(reports):
    for rank in (FIRST, MIDDLE):
        for pt in reports[rank]["ranks"][0]["decode"] + reports[rank]["ranks"][0]["prefill"]:
            assert pt["comm"] == pt["comm_expected"], (rank, pt["phase"])


def test_last_stage_sampling_gather_matches_planner(reports):
    """The planner is the reference for the sampling all-gathers (planner.sampling_gather_ops)."""
    for pt in reports[LAST]["ranks"][0]["decode"] + reports[LAST]["ranks"][0]["prefill"]:
        want = sum(b for _, b in planner.sampling_gather_ops(pt["batch"]))
        assert pt["comm"]["all_gather:tp"] == {
            "count": len(planner.sampling_gather_ops(1)),
            "bytes": want,
        }


def test_recorder_rows_have_a_real_runs_shape(reports):
    rows = reports[FIRST]["ranks"][0]["comm_rows"]
    assert [list(r) for r in rows] == [list(COMM_COLUMNS)] * len(rows)
    assert all(r["rank"] == FIRST and r["phase"] == "decode" for r in rows)
    assert [r["op"] for r in rows][:3] == ["broadcast", "broadcast", "all_reduce"]
    assert all(r["group_size"] == 2 and r["t_start_s"] is None for r in rows)  # recorded, never run
    assert {r["dtype"] for r in rows if r["op"] == "all_reduce"} == {"float32"}


def test_points_are_measured_and_checked(reports):
    for r in reports.values():
        assert r["device"]["type"] == "cpu" and "CPU" in r["device"]["note"]
        assert r["peaks"]["copy_gbps"] > 0 and r["peaks"]["matmul_tflops"] > 0
        (rk,) = r["ranks"]
        (dec,), (pre,) = rk["decode"], rk["prefill"]
        assert dec["check"] == "ok (exact)"  # StaticStep (the graph's body) == forward
        assert (dec["batch"], dec["tokens"], dec["context"]) == (B, 1, 16)
        assert (pre["batch"], pre["tokens"], pre["context"]) == (1, 8, 0)
        for pt in (dec, pre):
            assert pt["step_s"] > 0 and pt["mode"] == "eager" and pt["iters"] == 1
            assert pt["gbps"] == pytest.approx(pt["bytes"] / pt["step_s"] / 1e9)
            assert pt["tflops"] == pytest.approx(pt["flops"] / pt["step_s"] / 1e12)
        # bytes: the middle rank's weights (37120·4) + KV of 17 positions: 2·2 layers·1 head·16·4 =
        # 256 B/token/row
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


def test_text_report_labels_cpu_and_projection(reports):
    from harness.commands.emulate import render

    out = render(reports[MIDDLE])
    assert "CPU numbers: not a GPU measurement" in out
    assert "PROJECTION" in out and "rank 2 (middle stage 1, tp 0)" in out


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--rank", "8"], "--rank: 8 is outside 0..7"),
        (["--stage", "4"], "--stage: 4 is outside 0..3"),
        (["--rank", "0", "--stage", "1"], "not allowed with argument"),
        (["--batches", "2,x"], "comma-separated"),
        (["--contexts", "512"], "--contexts: 512 is out of range"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, says):
    try:
        rc = cli(["emulate", TINY, *argv])
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and err.count("\n") == 1, err


def test_a_70b_rank_on_cpu_is_refused_in_one_line(capsys):
    rc = cli(
        [
            "emulate",
            str(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml"),
            "--rank",
            "0",
            "--set",
            "run.device=cpu",
        ]
    )
    err = capsys.readouterr().err
    assert (
        rc == 2 and "holds 18.2 GB of weights; emulate it on a GPU" in err and err.count("\n") == 1
    )


def test_recording_comm_issues_nothing_for_a_group_of_one():
    import torch

    from harness.emulate import rank_comm
    from harness.spec.layout import Layout

    comm = rank_comm(Layout(1, 2, 1, (1, 1)), 1)
    comm.rec.level = "counts"
    t = torch.ones(3)
    assert comm.all_reduce(t) is t and comm.all_gather(t) == [t]
    comm.send(t, 0)
    assert [(r[3], r[4], r[5], r[6], r[9]) for r in comm.rec.rows] == [("send", "pp", 2, 0, 12)]


def test_measured_compute_interpolates_and_scales():
    from harness.emulate import MeasuredTiming, Point, RankResult, measured_compute
    from harness.spec.spec import load_spec

    spec = load_spec(TINY)
    res = RankResult(
        0,
        0,
        0,
        "first",
        [0, 1],
        1,
        1,
        4,
        0.0,
        decode=[
            Point("decode", 1, 1, 10, step_s=1.0),
            Point("decode", 4, 1, 10, step_s=2.5),
            Point("decode", 1, 1, 30, step_s=2.0),
            Point("decode", 4, 1, 30, step_s=3.5),
        ],
        prefill=[Point("prefill", 1, 100, 0, step_s=0.5)],
    )
    assert measured_compute(res, 2, 1, 10) == pytest.approx(1.5)  # linear in batch
    assert measured_compute(res, 2, 1, 20) == pytest.approx(2.0)  # then in context
    assert measured_compute(res, 8, 1, 10) == pytest.approx(4.5)  # extended past the last batch
    assert measured_compute(res, 1, 300, 0) == pytest.approx(1.5)  # one prefill point: proportional
    base = planner.Timing(
        spec.shape, spec.layout, spec.gpu, 4, 8, planner.links(spec.layout, spec.gpu, 8)
    )
    tm = MeasuredTiming(spec.shape, spec.layout, spec.gpu, 4, 8, base.links, measured={0: res})
    assert tm.compute(0, 2, 1, 10) == pytest.approx(1.5)
    assert tm.source(2) == 0
    assert tm.compute(2, 2, 1, 10) == pytest.approx(
        1.5 * base.compute(2, 2, 1, 10) / base.compute(0, 2, 1, 10)
    )


@pytest.mark.slow
def test_gpu_check_on_a_machine_without_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    # timeout: a hang guard only (no absolute timing in tests: the machine is shared)
    proc = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), str(tmp_path / "gc")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no GPU" in proc.stdout
    data = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert data["gpu"] is False
    assert (
        data["peaks"]["copy_gbps"] == "not measured"
        and data["peaks"]["matmul_tflops"] == "not measured"
    )
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["versions"]["status"] == "ok" and steps["emulate-tiny"]["status"] == "ok"
    assert data["emulation"]["tiny"]["ranks"] and data["versions"]["torch"]
    md = (tmp_path / "gc" / "gpu_check.md").read_text()
    assert "not measured" in md and "no GPU" in md


def test_projection_scales_a_local_gpu_to_the_specs():
    """Stage times equal to the H200's floors at the measured points project to the H100's floors
    there: each point is scaled by floor(spec GPU) / floor(local GPU)."""
    from harness.emulate import MeasuredTiming, Point, RankResult, project
    from harness.spec.catalog import GPU_CATALOG
    from harness.spec.spec import load_spec

    spec = load_spec(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml")
    h200 = GPU_CATALOG["H200-SXM-141GB"]
    lk = planner.links(spec.layout, spec.gpu, 8)
    local = planner.Timing(spec.shape, spec.layout, h200, 2, 64, lk)
    spec_tm = planner.Timing(spec.shape, spec.layout, spec.gpu, 2, 64, lk)
    results = []
    for stage in (0, 1, 3):
        dec = [
            Point("decode", b, 1, c, step_s=local.compute(stage, b, 1, c))
            for c in (512, 2048)
            for b in (1, 64)
        ]
        pre = [Point("prefill", 1, t, 0, step_s=local.compute(stage, 1, t, 0)) for t in (512, 2048)]
        results.append(RankResult(2 * stage, stage, 0, "x", [], 0, 0, 0, 0.0, dec, pre))
    tm = MeasuredTiming(
        spec.shape,
        spec.layout,
        spec.gpu,
        2,
        64,
        lk,
        measured={r.stage: r for r in results},
        local_gpu=h200,
    )
    for s in range(4):
        assert tm.compute(s, 64, 1, 2048) == pytest.approx(
            spec_tm.compute(s, 64, 1, 2048), rel=1e-9
        )
        assert tm.compute(s, 1, 2048, 0) == pytest.approx(spec_tm.compute(s, 1, 2048, 0), rel=1e-9)
    # memory-bound decode at batch 1: the H100 is 4800/3350 times slower than the H200
    assert tm.compute(1, 1, 1, 512) / local.compute(1, 1, 1, 512) == pytest.approx(4800 / 3350)
    out = project(spec, results, "NVIDIA H200", h200)
    assert "scaled to H100-SXM-80GB" in out["projection"]["basis"]
    assert out["stage_sources"] == {
        "0": "measured",
        "1": "measured",
        "2": "scaled from stage 1",
        "3": "measured",
    }
    for key in ("tpot_floor_s", "ttft_floor_s", "rps_bound"):
        assert out["projection"][key] > 0


def test_projection_equals_the_analytic_bounds_when_stages_run_at_their_floors():
    """Measured = the planner's compute floor at every measured point (same GPU, no scaling): the
    projection is the analytic bounds (floors are linear in batch and context between the
    points)."""
    from harness.emulate import Point, RankResult, project
    from harness.spec.catalog import GPU_CATALOG
    from harness.spec.spec import load_spec

    spec = load_spec(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml")
    tm = planner.Timing(
        spec.shape, spec.layout, spec.gpu, 2, 64, planner.links(spec.layout, spec.gpu, 8)
    )
    results = [
        RankResult(
            2 * s,
            s,
            0,
            "x",
            [],
            0,
            0,
            0,
            0.0,
            [
                Point("decode", b, 1, c, step_s=tm.compute(s, b, 1, c))
                for c in (512, 2048)
                for b in (1, 64)
            ],
            [Point("prefill", 1, t, 0, step_s=tm.compute(s, 1, t, 0)) for t in (512, 1024, 2048)],
        )
        for s in range(4)
    ]
    out = project(spec, results, "NVIDIA H100 80GB HBM3", GPU_CATALOG["H100-SXM-80GB"])
    p, a = out["projection"], out["analytic"]
    assert "scaled" not in p["basis"]
    for key in (
        "tpot_floor_s",
        "tpot_at_rows_s",
        "ttft_floor_s",
        "e2e_floor_s",
        "rps_bound",
        "rps_slo",
    ):
        assert p[key] == pytest.approx(a[key], rel=1e-9), key


def test_gpu_check_summary_of_a_gpu_run(reports, tmp_path, capsys):
    """The GPU branch of the summary, fed with this file's three CPU emulations as the three ranks'
    results and a hand-written pytest JUnit file (the shapes a GPU run writes, not GPU numbers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "launch" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    work = tmp_path / "work"
    work.mkdir()
    (work / "versions.json").write_text(
        json.dumps(
            {
                "cuda_available": True,
                "gpu_names": ["test device"],
                "driver": "d",
                "cuda": "c",
                "torch": "t",
                "nccl": "n",
            }
        )
    )
    (work / "peaks.json").write_text(json.dumps({"copy_gbps": 100.0, "matmul_tflops": 10.0}))
    (work / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase name="a" time="1"/><testcase name="b">'
        '<failure message="boom"/></testcase></testsuite></testsuites>'
    )
    for kind, rank in (("first", FIRST), ("middle", MIDDLE), ("last", LAST)):
        (work / f"emulate-{kind}.json").write_text(json.dumps(reports[rank]))
        (work / f"emulate-{kind}.log").write_text(f"{kind} log\n")
    (work / "steps.tsv").write_text(
        "versions\t0\t1.0\t60\npeaks\t0\t2.0\t60\npytest-gpu\t1\t3.0\t150\n"
        "emulate-first\t0\t4.0\t110\nemulate-middle\t124\t110.0\t110\n"
        "emulate-last\tskipped\t\t110\n"
    )
    assert gc.summarize(str(work), str(tmp_path / "out")) == 1  # a step failed
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [s["status"] for s in data["steps"]] == [
        "ok",
        "ok",
        "failed",
        "ok",
        "timeout",
        "skipped",
    ]
    assert data["peaks"]["copy_gbps"] == 100.0
    assert (data["tests"]["passed"], data["tests"]["failure"]) == (1, 1)
    per_rank = data["goals"]["per_rank"]
    assert set(per_rank) == {"0", "2", "6"}
    assert per_rank["2"]["decode_b1_copy_frac"] == {}  # the sweep above has B=2 only
    assert data["projection"]["stage_sources"] == {
        "0": "measured",
        "1": "measured",
        "2": "scaled from stage 1",
        "3": "measured",
    }
    assert data["projection"]["projection"]["tpot_floor_s"] > 0
    # the short table ends with the steps
    assert "emulate-middle timeout" in printed.splitlines()[-1]
    assert "first log" in (tmp_path / "out" / "gpu_check.log").read_text()
    assert "| b | failure | 0.0 |" not in (tmp_path / "out" / "gpu_check.md").read_text()


@pytest.mark.parametrize(
    "stage", [0, 1, 2]
)  # first (token ids in), middle (hidden), last (logits out)
def test_forward_indexed_equals_forward_on_a_mixed_batch(stage, monkeypatch):
    """``StageModel.forward_indexed`` (what the CUDA graph captures) on a prebuilt ``BatchIndex``
    gives ``forward``'s output and cache writes bit for bit on a batch mixing a decode row, a fresh
    prefill and a chunk after cached tokens (``forward`` padded, ``forward_indexed`` packed); it
    never builds an index itself (the host sync)."""
    import torch

    from harness.emulate import rank_comm
    from harness.engines.reference.model import llama
    from harness.engines.reference.model.build import build_stage
    from harness.engines.reference.model.weights import SeededWeights
    from harness.spec.layout import Layout
    from harness.spec.spec import load_spec

    shape = load_spec(TINY).shape
    lay = Layout(1, 3, 1, (3, 3, 2))
    model = build_stage(
        shape,
        lay,
        lay.place(stage),
        rank_comm(lay, stage),
        dtype=torch.float32,
        device=torch.device("cpu"),
        weights=SeededWeights(3),
    )
    model.allocate_kv(4, 16)
    gen = torch.Generator().manual_seed(0)
    attn = [layer.self_attn for layer in model.model.layers.values()]
    for a in attn:  # earlier tokens of every slot
        a.k_cache.normal_(generator=gen)
        a.v_cache.normal_(generator=gen)
    before = [(a.k_cache.clone(), a.v_cache.clone()) for a in attn]
    # slot 2 decodes at position 9; slot 0 prefills 5 tokens; slot 3 adds 3 tokens after 4 cached (2
    # padded)
    slots, start, n = (torch.tensor(v) for v in ([2, 0, 3], [9, 0, 4], [1, 5, 3]))
    x = (
        torch.randint(0, shape.vocab, (3, 5), generator=gen)
        if stage == 0
        else torch.randn(3, 5, shape.hidden, generator=gen)
    )
    want = model(x, slots, start, n)
    want_kv = [(a.k_cache.clone(), a.v_cache.clone()) for a in attn]
    assert not torch.equal(want_kv[0][0], before[0][0])  # the step did write the cache
    for a, (k, v) in zip(attn, before):
        a.k_cache.copy_(k)
        a.v_cache.copy_(v)
    batch = model.index(slots, start, n, width=5)

    def no_index(*args, **kw):
        raise AssertionError("forward_indexed built a BatchIndex")

    monkeypatch.setattr(llama, "BatchIndex", no_index)
    got = model.forward_indexed(batch.pack(x), batch)  # packed in: 9 tokens, not 3 x 5
    # out in the index's form
    assert got.shape == ((3, shape.vocab) if stage == 2 else (3, 5, shape.hidden))
    assert torch.equal(got, want)
    for a, (k, v) in zip(attn, want_kv):
        assert torch.equal(a.k_cache, k) and torch.equal(a.v_cache, v)


def test_a_ceiling_a_point_beat_is_raised_to_that_point():
    """Hand numbers: copy measured 10 GB/s, matmul 0.02 TFLOP/s; a decode point moved 1.5 GB in
    0.1 s (15 GB/s) and a prefill did 0.144 TFLOP in 2 s (0.072 TFLOP/s, the '360 %' of before)."""
    from harness.emulate import Peaks, Point, raise_to_points

    peaks = Peaks("CPU", 10.0, 1, 0.02, 512, "float32", 10)
    dec = Point("decode", 1, 1, 128, step_s=0.1, bytes=1.5e9, flops=3e9, gbps=15.0, tflops=0.03)
    pre = Point("prefill", 1, 128, 0, step_s=2.0, bytes=2e9, flops=1.44e11, gbps=1.0, tflops=0.072)
    raise_to_points(peaks, [dec, pre, Point("decode", 4, 1, 128)])  # an untimed point is left alone
    assert (peaks.copy_gbps, peaks.matmul_tflops) == (15.0, 0.072)
    assert (peaks.copy_gbps_measured, peaks.matmul_tflops_measured) == (10.0, 0.02)
    assert dec.copy_frac == 1.0 and pre.peak_frac == 1.0
    assert pre.copy_frac == pytest.approx(1 / 15) and dec.peak_frac == pytest.approx(0.03 / 0.072)
    assert len(peaks.notes) == 2 and "the decode point B=1 T=1 ctx=128" in peaks.notes[0]
    assert "matmul peak raised from 0.02 to 0.072" in peaks.notes[1]


def test_planner_error_when_a_floor_is_above_the_measured_projection():
    from harness.emulate import planner_errors

    analytic = {
        "tpot_floor_s": 0.5,
        "tpot_at_rows_s": 0.8,
        "ttft_floor_s": 72.0,
        "e2e_floor_s": 100.0,
        "rps_bound": 0.02,
        "rps_slo": None,
    }
    measured = {
        "tpot_floor_s": 0.6,
        "tpot_at_rows_s": 0.8,
        "ttft_floor_s": 30.0,
        "e2e_floor_s": 120.0,
        "rps_bound": 0.03,
        "rps_slo": None,
    }
    errors = planner_errors(analytic, measured)
    assert errors == [
        "planner error: analytic floor TTFT, mean prompt (ms) 72000.0 is above the measured "
        "projection 30000.0",
        "planner error: analytic bound max RPS 0.02 is below the measured projection 0.03",
    ]
    assert planner_errors(measured | {"ttft_floor_s": 29.0, "rps_bound": 0.04}, measured) == []
