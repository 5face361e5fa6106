"""Every planner formula against numbers worked out by hand (docs/formulas.md)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli
from harness.plan.planner import (
    Timing,
    bubble_ratio,
    comm_time_s,
    compute_floor_s,
    epsilon,
    expected_comm,
    kv_bytes_per_token,
    links,
    plan,
    pp_bytes_per_token_per_boundary,
    rank_params,
    ring_factor,
    slot_tokens,
    stage_bytes_read,
    stage_flops,
    token_budget,
    tp_allreduce_bytes_per_layer_per_token,
    workspace_bytes,
)
from harness.spec.catalog import gpu_spec, model_preset
from harness.spec.layout import Layout
from harness.spec.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
CFG_70B = ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml"
L70 = model_preset("llama3-70b")
TP2PP4 = Layout(2, 4, 1, (20, 20, 20, 20))

# Llama3-70B by hand: per layer q,o 8192x8192; k,v 8192x1024; gate,up,down 8192x28672; 2 norms of
# 8192.
LAYER_70B = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192  # 855,654,400
EMB_70B = 128256 * 8192  # 1,050,673,152
STAGE0_70B = 20 * (LAYER_70B - 2 * 8192) // 2 + 20 * 2 * 8192 + EMB_70B // 2  # 9,082,044,416
MID_70B = 20 * (LAYER_70B - 2 * 8192) // 2 + 20 * 2 * 8192  # 8,556,707,840
LAST_70B = MID_70B + EMB_70B // 2 + 8192  # 9,082,052,608


def test_hand_numbers_are_the_published_ones():
    # the hand arithmetic above, spelled out, so a slip in it cannot hide
    assert LAYER_70B == 855_654_400
    assert (STAGE0_70B, MID_70B, LAST_70B) == (9_082_044_416, 8_556_707_840, 9_082_052_608)


def test_total_params_llama3_70b_and_405b():
    assert L70.total_params() == 70_553_706_496
    assert 80 * LAYER_70B + 2 * EMB_70B + 8192 == 70_553_706_496
    l405 = model_preset("llama3.1-405b")
    layer = 2 * 16384 * 16384 + 2 * 16384 * 1024 + 3 * 16384 * 53248 + 2 * 16384
    assert l405.total_params() == 126 * layer + 2 * 128256 * 16384 + 16384 == 405_853_388_800


def test_rank_params_tp2_pp4():
    assert [rank_params(L70, TP2PP4, s) for s in range(4)] == [
        STAGE0_70B,
        MID_70B,
        MID_70B,
        LAST_70B,
    ]


def test_rank_params_single_rank_is_the_whole_model():
    assert rank_params(L70, Layout(1, 1, 1, (80,)), 0) == L70.total_params()


def test_rank_params_tied_embedding_counted_once():
    tiny = model_preset("tiny")
    import dataclasses

    tied = dataclasses.replace(tiny, tie_embeddings=True)
    one = Layout(1, 1, 1, (8,))
    assert rank_params(tied, one, 0) == tied.total_params() == tiny.total_params() - 256 * 64


def test_kv_bytes_per_token_and_per_token_comm():
    assert kv_bytes_per_token(L70, TP2PP4, 0, 2) == 2 * 20 * 4 * 128 * 2 == 40_960
    assert kv_bytes_per_token(L70, Layout(8, 1, 1, (80,)), 0, 2) == 2 * 80 * 1 * 128 * 2
    assert tp_allreduce_bytes_per_layer_per_token(L70, 2) == 32_768
    assert pp_bytes_per_token_per_boundary(L70, 2) == 16_384


def test_ring_bubble_epsilon():
    assert ring_factor(1) == 0 and ring_factor(2) == 1.0 and ring_factor(8) == 1.75
    assert bubble_ratio(4, 4) == pytest.approx(3 / 7)
    assert bubble_ratio(4, 1) == pytest.approx(3 / 4)
    assert bubble_ratio(1, 1) == 0.0
    ranks = [STAGE0_70B] * 2 + [MID_70B] * 4 + [LAST_70B] * 2
    mean = (2 * STAGE0_70B + 4 * MID_70B + 2 * LAST_70B) / 8  # 8,819,378,176
    assert mean == 8_819_378_176
    assert epsilon(ranks) == pytest.approx(9_082_052_608 / 8_819_378_176 - 1)
    assert epsilon(ranks) == pytest.approx(0.0297838, abs=1e-7)
    assert epsilon([5, 5, 5]) == 0.0


def test_workspace_formula():
    # 64 rows x 1536 tokens x (2*8192 + 3*28672/2) x 2 B; the last stage adds 64 x 128256/2 x 4 B of
    # logits
    act = 64 * 1536 * (2 * 8192 + 3 * 14336) * 2
    assert act == 11_676_942_336
    # packed: tokens, not rows x width
    assert workspace_bytes(L70, 2, False, 2, 64, 64 * 1536) == act
    assert workspace_bytes(L70, 2, True, 2, 64, 64 * 1536) == act + 64 * 64128 * 4


def test_expected_comm_tp2_pp4():
    rows, tokens, maxb = 2, 3, 64
    act = rows * tokens * 8192 * 2
    header = 8 * (4 + 3 * maxb)
    exp = expected_comm(L70, TP2PP4, 2, maxb, rows=rows, tokens=tokens)
    assert exp[(0, None, "all_reduce", "tp")] == {"count": 41, "bytes": 41 * act}
    assert exp[(1, None, "all_reduce", "tp")] == {"count": 40, "bytes": 40 * act}
    assert exp[(0, None, "broadcast", "tp")] == {"count": 2, "bytes": header + 8 * rows * tokens}
    assert exp[(3, None, "all_gather", "tp")] == {
        "count": 1,
        "bytes": rows * 2 * 8,
    }  # [B, 2] float64
    for s in (0, 1, 2):
        assert exp[(s, None, "send", "pp")] == {"count": 2, "bytes": header + act}
        assert exp[(s + 1, None, "recv", "pp")] == {"count": 2, "bytes": header + act}
    assert exp[(3, 0, "send", "pp")] == {"count": 2, "bytes": header + 8 * rows}
    assert exp[(0, 0, "recv", "pp")] == {"count": 2, "bytes": header + 8 * rows}
    assert len(exp) == 4 + 1 + 1 + 3 + 3 + 2


def test_expected_comm_groups_of_one_issue_nothing():
    assert expected_comm(L70, Layout(1, 1, 8, (80,)), 2, 8, rows=4, tokens=1) == {}
    only_pp = expected_comm(L70, Layout(1, 2, 1, (40, 40)), 2, 8, rows=4, tokens=1)
    assert {k[2] for k in only_pp} == {"send", "recv"}
    only_tp = expected_comm(L70, Layout(4, 1, 1, (80,)), 2, 8, rows=4, tokens=1)
    assert only_tp[(0, None, "all_reduce", "tp")]["count"] == 161  # 2 x 80 layers + embedding
    assert {k[2] for k in only_tp} == {"all_reduce", "broadcast", "all_gather"}


def test_flops_and_bytes_of_one_decode_token():
    # stage 1, one row, one new token after 1152 cached ones
    matmul = 20 * (LAYER_70B - 2 * 8192) // 2  # 8,556,380,160
    flops = 2 * matmul + 4 * 20 * 4096 * (1152 + 1)
    assert stage_flops(L70, TP2PP4, 1, 1, 1, 1152.0) == pytest.approx(flops)
    nbytes = MID_70B * 2 + (1152 + 1) * 40_960
    assert stage_bytes_read(L70, TP2PP4, 1, 2, 1, 1, 1152.0) == pytest.approx(nbytes)
    h100 = gpu_spec("H100-SXM-80GB")
    assert compute_floor_s(h100, flops, nbytes) == pytest.approx(nbytes / 3.35e12)  # memory bound
    # the last stage adds lm_head on the row's last position; stage 0 reads only the looked-up
    # embedding rows
    assert stage_flops(L70, TP2PP4, 3, 1, 1, 0.0) == pytest.approx(
        2 * matmul + 2 * EMB_70B / 2 + 4 * 20 * 4096
    )
    assert stage_bytes_read(L70, TP2PP4, 0, 2, 1, 1, 0.0) == pytest.approx(
        (STAGE0_70B - EMB_70B // 2) * 2 + 4096 * 2 + 40_960
    )


def test_prefill_is_compute_bound():
    h100 = gpu_spec("H100-SXM-80GB")
    f = stage_flops(L70, TP2PP4, 1, 1, 1024, 0.0)
    b = stage_bytes_read(L70, TP2PP4, 1, 2, 1, 1024, 0.0)
    assert f == pytest.approx(2 * 8_556_380_160 * 1024 + 4 * 20 * 4096 * (1024 * 1025 / 2))
    assert compute_floor_s(h100, f, b) == pytest.approx(f / 989e12)


def test_links_and_comm_time():
    h100 = gpu_spec("H100-SXM-80GB")
    lk = links(TP2PP4, h100, 8)
    assert lk.tp_inter == (False,) * 4 and lk.pp_inter == (False,) * 4
    # one decode token on stage 1: 40 all-reduces of 16,384 B at ring factor 1, plus 2 sends (header
    # + hidden)
    t = comm_time_s(L70, TP2PP4, 2, 64, lk, 1, rows=1, tokens=1)
    assert t == pytest.approx(40 * 16_384 / 450e9 + (1568 + 16_384) / 450e9)
    # TP8-PP2 on 2 nodes x 8: TP inside a node, the PP hop crosses nodes
    lay = Layout(8, 2, 1, (40, 40))
    lk = links(lay, h100, 8)
    assert lk.tp_inter == (False, False) and lk.pp_inter == (True, True)
    assert lk.pp_gbps == (50.0, 50.0) and lk.tp_gbps == (450.0, 450.0)
    # 4 GPUs per node: a TP8 group spans two nodes
    assert links(lay, h100, 4).tp_inter == (True, True)


def test_plan_of_the_seed_strategy():
    pl = plan(load_spec(CFG_70B))
    assert [r.params for r in pl.ranks] == [STAGE0_70B] * 2 + [MID_70B] * 4 + [LAST_70B] * 2
    assert pl.ranks[0].weight_bytes == 18_164_088_832
    assert pl.ranks[0].kv_bytes_per_token == 40_960
    assert pl.params_total == 70_553_706_496
    assert pl.weight_epsilon == pytest.approx(0.0297838, abs=1e-7)
    assert [s.weight_bytes for s in pl.stages] == [
        2 * STAGE0_70B * 2,
        2 * MID_70B * 2,
        2 * MID_70B * 2,
        2 * LAST_70B * 2,
    ]
    mem = int(79.6 * 2**30)
    r0 = pl.ranks[0]
    assert r0.memory_bytes == mem
    # the widest forward: the default token budget, 2048 packed tokens (< 64 rows x the longest
    # prompt, 1536)
    assert r0.workspace_bytes == 2048 * (2 * 8192 + 3 * 14336) * 2 == 243_269_632
    assert r0.kv_budget_bytes == int(0.9 * (mem - 18_164_088_832 - 243_269_632))
    assert r0.kv_token_capacity == r0.kv_budget_bytes // 40_960
    assert r0.total_bytes + r0.headroom_bytes == mem and r0.fits
    assert pl.comm.tp_allreduce_bytes_per_layer_per_token == 32_768
    assert pl.comm.pp_bytes_per_token_per_boundary == 16_384
    assert [s.tp_allreduces_per_forward for s in pl.stages] == [41, 40, 40, 40]
    b = pl.bounds
    assert b.bubble_ratio == pytest.approx(3 / 7) and b.micro_batches == 4
    assert (b.input_mean, b.output_mean, b.decode_context) == (1024.0, 256.0, 1152.0)
    # one request alone: each stage reads its weights + 1153 tokens of KV per token, plus its comm
    floor = sum(
        ((2 * p * 2) // 2 + 1153 * 40_960) / 3.35e12
        for p in (STAGE0_70B - EMB_70B // 2 + 4096, MID_70B, MID_70B, LAST_70B)
    )
    assert b.tpot_floor_s == pytest.approx(floor, rel=1e-3)
    assert 0 < b.rps_slo <= b.rps_bound and not pl.problems and pl.fits
    json.dumps(pl.to_dict())  # JSON-ready


def test_token_budget_bounds_the_forward_and_chunks_the_ttft_floor():
    """run.max_num_batched_tokens=256: the widest forward is 256 packed tokens, and the mean
    1024-token prompt is prefilled in 4 chunks of 256, each after the ones before it, through
    every stage in turn (one sequence is in one micro-batch at a time)."""
    spec = load_spec(CFG_70B, ["run.max_num_batched_tokens=256"])
    pl = plan(spec)
    assert pl.run["max_num_batched_tokens"] == 256 and pl.run["forward_tokens"] == 256
    assert pl.ranks[0].workspace_bytes == 256 * (2 * 8192 + 3 * 14336) * 2
    b = pl.bounds
    assert (b.prefill_chunk, b.prefill_chunks) == (256, 4)
    tm = Timing(spec.shape, spec.layout, spec.gpu, 2, 64, links(spec.layout, spec.gpu, 8))
    want = sum(tm.latency(s, 1, 256, 256.0 * k) for k in range(4) for s in range(4))
    assert b.ttft_floor_s == pytest.approx(want, rel=1e-12)
    assert plan(load_spec(CFG_70B)).run["max_num_batched_tokens"] == 2048  # the default budget
    assert token_budget(load_spec(CFG_70B, ["run.max_batch=4096"])) == 4096  # never below max_batch
    whole = plan(load_spec(CFG_70B)).bounds  # default budget 2048: the prompt in one step
    assert (whole.prefill_chunk, whole.prefill_chunks) == (1024, 1)
    # each 256-token chunk re-reads the stage's weights: 4 x 18.2 GB at 3.35 TB/s > one
    # compute-bound prefill
    assert b.ttft_floor_s > whole.ttft_floor_s
    # caps each chunk
    assert plan(load_spec(CFG_70B, ["run.prefill_chunk=512"])).bounds.prefill_chunks == 2


def test_kv_slot_is_paged_on_a_gpu_in_16_bit_only():
    assert slot_tokens(load_spec(CFG_70B, ["run.max_seq_len=2000"])) == 2048  # 8 pages of 256
    assert slot_tokens(load_spec(CFG_70B, ["run.max_seq_len=2000", "model.dtype=fp32"])) == 2000
    assert slot_tokens(load_spec(ROOT / "configs" / "tiny-tp2-pp4-cpu.yaml")) == 128  # the CPU twin


def test_kv_slots_per_replica_one_per_sequence_in_flight_within_the_kv_budget():
    # m · max_batch = 4 · 64 = 256 slots of 2048 tokens fit (the smallest rank caches 1,473,179)
    default = plan(load_spec(CFG_70B))
    assert min(r.kv_token_capacity for r in default.ranks) == 1_473_179
    assert default.kv_slots() == 256
    # 8192-token slots: the budget binds, ⌊1,473,179 / 8192⌋ = 179 < 256
    assert plan(load_spec(CFG_70B, ["run.max_seq_len=8192"])).kv_slots() == 179
    # a budget under one slot still allocates one (the plan says it does not fit)
    tiny = plan(load_spec(CFG_70B, ["run.max_seq_len=8192", "run.kv_cache_fraction=0.0001"]))
    assert tiny.kv_slots() == 1 and not tiny.fits
    # the CPU twin: 4 micro-batches of 8
    assert plan(load_spec(ROOT / "configs" / "tiny-tp2-pp4-cpu.yaml")).kv_slots() == 32


def test_plan_that_does_not_fit_says_so_with_numbers(capsys):
    rc = cli.main(
        [
            "plan",
            str(CFG_70B),
            "--set",
            "parallel.tp=1",
            "--set",
            "parallel.pp=1",
            "--set",
            "cluster.gpus_per_node=1",
            "--set",
            "parallel.layer_split=null",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "stage 0 does not fit: weights 141.1 GB" in out and "exceed 85.5 GB" in out


def test_plan_json_in_process(capsys):
    assert cli.main(["plan", str(CFG_70B), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ranks"][7]["weight_bytes"] == LAST_70B * 2
    assert d["stages"][0]["holds"] == ["embedding"] and d["stages"][3]["holds"] == [
        "final_norm",
        "lm_head",
    ]
    assert d["schema_version"] == 1


def test_harness_plan_answers_under_2s_as_a_subprocess():
    exe = Path(sys.executable).parent / "harness"
    t0 = time.monotonic()
    p = subprocess.run(
        [str(exe), "plan", str(CFG_70B)], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    dt = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert dt < 2.0, f"harness plan took {dt:.2f} s"
    assert "18.16 GB" in p.stdout and "32,768 B per layer per token" in p.stdout
    assert max(len(line) for line in p.stdout.splitlines()) < 100


def test_planner_search_and_claims_do_not_import_torch():
    code = (
        "import sys, harness.plan.planner, harness.plan.search, harness.verdicts.claims.verify, "
        "harness.commands.plan, "
        "harness.commands.verify_claims; print('torch' in sys.modules)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def test_check_weights_counts_again_with_accelerate(capsys, tmp_path):
    """accelerate's compute_module_sizes of each meta-device stage equals the planner's bytes,
    exactly, and both equal the hand numbers (70B TP2-PP4 bf16; tiny with a vocabulary of 255 at
    tp=2: padded)."""
    assert cli.main(["plan", str(CFG_70B), "--json", "--check-weights"]) == 0
    checks = json.loads(capsys.readouterr().out)["weight_cross_check"]
    assert len(checks) == 8 and all(c["ok"] for c in checks)
    assert [c["measured"] for c in checks] == [
        2 * n for n in (STAGE0_70B,) * 2 + (MID_70B,) * 4 + (LAST_70B,) * 2
    ]
    from harness.engines.reference.model.accounting import meta_rank_bytes

    odd = dataclasses.replace(model_preset("tiny"), vocab=255)
    lay = Layout(2, 1, 1, (8,))
    layer = (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) // 2 + 2 * 64
    # 128 rows each
    assert meta_rank_bytes(odd, lay, 1, "fp32") == 4 * (8 * layer + 2 * 128 * 64 + 64)
    assert cli.main(["plan", str(CFG_70B), "--check-weights"]) == 0
    assert (
        "weights cross-check (accelerate compute_module_sizes, meta-device stages): = planner on "
        "8/8 ranks" in capsys.readouterr().out
    )
