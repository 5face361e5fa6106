"""TP x PP x DP on gloo (CPU, fp32) against transformers: ONE torchrun world of 8 ranks runs every
layout (tests/dist_worker.py); each test below reads its JSON results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dist_worker import LAYOUTS, NEW_TOKENS, ODD, PROMPTS, SEED, WIDE, label
from harness.engines.reference.model.weights import SeededWeights, full_state_dict
from harness.plan.planner import rank_params
from harness.spec.layout import Layout, even_split

pytestmark = pytest.mark.slow  # one torchrun world of 8 ranks for the module

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist_worker.py"
WORLD = 8
MiB = 2**20


@pytest.fixture(scope="module")
def world(tmp_path_factory, hf, tiny):
    """Write the checkpoint, start the 8-rank world, build the references while it runs."""
    tmp = tmp_path_factory.mktemp("dist")
    ckpt_model = hf.model(tiny, seed=11)
    ckpt_model.save_pretrained(tmp / "ckpt", safe_serialization=True, max_shard_size="300KB")
    assert len(list((tmp / "ckpt").glob("*.safetensors"))) >= 2
    (tmp / "out").mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(WORLD),
        str(WORKER),
        "--out",
        str(tmp / "out"),
        "--checkpoint",
        str(tmp / "ckpt"),
    ]
    t0 = time.monotonic()
    # Own session: on a timeout the whole torchrun tree (agent + 8 workers) is killed, nothing else.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    models = {
        "seeded": hf.model(tiny, full_state_dict(tiny, SeededWeights(SEED))),
        "checkpoint": ckpt_model,
    }
    refs = {}
    for name, model in models.items():
        for order, prompts in (("as-given", PROMPTS), ("reversed", PROMPTS[::-1])):
            refs[name, order] = (
                hf.last_logits(model, prompts),
                hf.greedy(model, prompts, NEW_TOKENS),
            )
    try:  # ~35 s on an idle 2-core machine; the margin is for a machine shared with other runs
        log, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun world did not finish in 240 s:\n{log[-4000:]}")
    assert proc.returncode == 0, log[-4000:]
    ranks = [json.loads((tmp / "out" / f"rank{r}.json").read_text()) for r in range(WORLD)]
    print(f"8-rank world: {time.monotonic() - t0:.1f} s")
    return ranks, refs


def _runs(world, layout_label, weights):
    return [
        r
        for rank in world[0]
        for r in rank["runs"]
        if r["layout"] == layout_label and r["weights"] == weights
    ]


CASES = [(t, w) for t in LAYOUTS for w in ("seeded", "checkpoint")]


@pytest.mark.parametrize("layout,weights", CASES, ids=[f"{label(*t)}-{w}" for t, w in CASES])
def test_logits_and_greedy_tokens_match_transformers(world, layout, weights):
    tp, pp, dp = layout
    lay = Layout(tp, pp, dp, even_split(8, pp))
    runs = _runs(world, label(*layout), weights)
    assert sorted(r["rank"] for r in runs) == list(range(lay.world_size))
    for replica in range(dp):
        mine = {r["rank"]: r for r in runs if r["dp"] == replica}
        coord, last = mine[lay.rank_of(replica, 0, 0)], mine[lay.rank_of(replica, pp - 1, 0)]
        ref_logits, ref_tokens = world[1][weights, coord["prompt_order"]]
        assert coord["tokens"] == ref_tokens
        logits = torch.tensor(last["logits"])
        assert logits.shape == (len(PROMPTS), 256)
        err = (logits - ref_logits).abs().max().item()
        assert err < 1e-4, f"replica {replica}: prefill logits differ by {err}"
        # only the coordinator returns tokens, only the last stage's TP rank 0 reported logits
        assert [r for r in mine.values() if r["tokens"] is not None] == [coord]
        assert [r for r in mine.values() if r["logits"] is not None] == [last]


@pytest.mark.parametrize("layout", [t for t in LAYOUTS if t[1] > 1], ids=lambda t: label(*t))
def test_many_micro_batches_in_flight_give_the_same_tokens(world, layout):
    """4 micro-batches (one sequence each) in the pipeline at once, each decoded as soon as its
    token returns: the same greedy tokens as transformers."""
    runs = _runs(world, label(*layout), "seeded")
    coords = [r for r in runs if r["stage"] == 0 and r["tp"] == 0]
    assert len(coords) == layout[2]
    for r in coords:
        assert r["pipelined_tokens"] == world[1]["seeded", r["prompt_order"]][1]
    assert all(r["pipelined_tokens"] is None for r in runs if r not in coords)


def test_no_stage_waits_for_the_device(world):
    """TP2-PP4, 4 requests through the serving loop with every micro-batch in flight, counted by
    tests/sync_counter.py on each rank (issue 28 item 2): the coordinator reads the device once per
    step (the sampled tokens) and each returned header on the host; every other rank reads
    nothing from the device, uploads nothing blocking, sizes no output by values: it only reads
    its step headers (host integers, one per step and one for the stop)."""
    runs = [r for r in _runs(world, "tp2-pp4-dp1", "seeded")]
    assert len(runs) == 8
    for r in runs:
        s = r["syncs"]
        coordinator = r["stage"] == 0 and r["tp"] == 0
        want = (
            {"read": s["steps"], "header": s["steps"]}
            if coordinator
            else {"header": s["steps"] + 1}
        )
        assert s["counts"] == want, (r["rank"], s)
        assert s["steps"] >= 6


def test_vocab_parallel_argmax_ties_go_to_the_lowest_id(world):
    checks = [r["tie_check"] for rank in world[0] for r in rank["runs"] if "tie_check" in r]
    # last-stage ranks of tp2 pp1/pp2/pp4 and dp2
    assert len(checks) == 2 * 1 + 2 * 1 + 2 * 1 + 2 * 2
    assert all(c == [5, 131] for c in checks)


def _tiny_share_bytes(tp: int, n_layers: int, first: bool, last: bool) -> int:
    """Hand formula for the tiny model (hidden 64, q 64, kv 32, intermediate 128, vocab 256), fp32:
    a layer = (2*64*64 + 2*64*32 + 3*64*128) / tp + 2*64 norm weights; embedding and lm_head
    256*64 / tp each; final norm 64."""
    layer = 36864 // tp + 128
    return 4 * (
        n_layers * layer + (16384 // tp if first else 0) + (16384 // tp + 64 if last else 0)
    )


def test_each_rank_holds_exactly_its_share(world, tiny):
    # hand-computed anchors for tp2-pp4 (2 layers per stage): 4*(2*18560 + 8192), 4*(2*18560), +64
    assert [_tiny_share_bytes(2, 2, s == 0, s == 3) for s in range(4)] == [
        181248,
        148480,
        148480,
        181504,
    ]
    seen = 0
    for rank in world[0]:
        for r in rank["runs"]:
            tp, pp = int(r["layout"][2]), int(r["layout"].split("-")[1][2:])
            n = len(r["layers"])
            start = sum(even_split(8, pp)[: r["stage"]])
            assert r["layers"] == list(range(start, start + n))
            assert r["param_bytes"] == _tiny_share_bytes(
                tp, n, r["stage"] == 0, r["stage"] == pp - 1
            ), r
            dp = int(r["layout"][-1])
            assert r["param_bytes"] == 4 * rank_params(
                tiny, Layout(tp, pp, dp, even_split(8, pp)), r["stage"]
            )
            seen += 1
    assert seen == 2 * sum(t * p * d for t, p, d in LAYOUTS)


def _wide_local_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """TP2 shards by hand: colwise halves dim 0, rowwise halves dim 1, vocab-parallel halves
    rows."""
    if name.endswith(
        (
            "q_proj.weight",
            "k_proj.weight",
            "v_proj.weight",
            "gate_proj.weight",
            "up_proj.weight",
            "embed_tokens.weight",
            "lm_head.weight",
        )
    ):
        return (shape[0] // 2, shape[1])
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        return (shape[0], shape[1] // 2)
    return shape


def test_no_rank_materialises_the_full_model(world):
    """tp2-pp4 of a 159 MB model: every rank holds its share (>= 4x smaller) and nothing more.

    Three independent readings per rank: (1) every parameter has its sharded shape; (2) the weight
    source handed out exactly the share, its largest transient being one full fp32 parameter
    (SeededWeights generates a parameter in full, then slices it); (3) the process's peak RSS
    growth during the build (Linux VmHWM, reset before it) stays within share + that transient +
    16 MiB of allocator slack: far below the full model."""
    h, inter, vocab = WIDE.hidden, WIDE.intermediate, WIDE.vocab
    full_bytes = WIDE.total_params() * 4
    assert full_bytes == 4 * (
        8 * (2 * h * h + 2 * h * 256 + 3 * h * inter + 2 * h) + 2 * vocab * h + h
    )
    layer = (2 * h * h + 2 * h * 256 + 3 * h * inter) // 2 + 2 * h
    from harness.engines.reference.model.llama import hf_param_shapes

    global_shapes = hf_param_shapes(WIDE)
    for rank in world[0]:
        m = rank["memory"]
        stage = rank["rank"] // 2
        share = 4 * (
            2 * layer
            + (vocab * h // 2 if stage == 0 else 0)
            + (vocab * h // 2 + h if stage == 3 else 0)
        )
        assert full_bytes >= 4 * share
        assert m["param_bytes"] == m["returned_bytes"] == share
        assert share == 4 * rank_params(WIDE, Layout(2, 4, 1, (2,) * 4), stage)
        lo = 2 * stage
        names = [n for n in global_shapes if any(f"layers.{i}." in n for i in (lo, lo + 1))]
        names += ["model.embed_tokens.weight"] if stage == 0 else []
        names += ["model.norm.weight", "lm_head.weight"] if stage == 3 else []
        assert m["shapes"] == {n: list(_wide_local_shape(n, global_shapes[n])) for n in names}
        assert m["devices"] == ["cpu"]
        biggest = vocab * h * 4 if stage in (0, 3) else inter * h * 4
        assert m["peak_transient_bytes"] == biggest
        assert m["hwm_reset"]
        assert share // 2 <= m["rss_growth_bytes"] <= share + biggest + 16 * MiB, (
            rank["rank"],
            m["rss_growth_bytes"],
        )
        assert m["rss_growth_bytes"] < full_bytes / 2


def _expected_ops(tp: int, pp: int, stage: int, tp_rank: int, n_layers: int) -> dict[str, int]:
    """Trace counts of one generate (1 prefill + 15 decode steps, then stop), labelled
    op/group/phase.

    TP (tp > 1): 2 all-reduces per layer (O, down) + 1 on stage 0 (embedding); stage 0 receives
    header + ids by broadcast (2 per step) and the stop (1); the last stage gathers (max, id) once
    per step. PP (pp > 1): header + hidden per step to the next stage and the stop; the last
    stage's TP rank 0 returns header + tokens per step, which the coordinator receives ("sample").
    """
    ops: dict[str, int] = {}
    first, last = stage == 0, stage == pp - 1

    def add(key, prefill, decode):
        for phase, n in (("prefill", prefill), ("decode", decode)):
            if n:
                ops[f"{key}/{phase}"] = ops.get(f"{key}/{phase}", 0) + n

    if tp > 1:
        ar = 2 * n_layers + first
        add("all_reduce/tp", ar, 15 * ar)
        if first:
            add("broadcast/tp", 2, 30)
            ops["broadcast/tp/control"] = 1
        if last:
            ops["all_gather/tp/sample"] = 16
    if pp > 1:
        if not first:
            add("recv/pp", 2, 30)
            ops["recv/pp/control"] = 1
        if not last:
            add("send/pp", 2, 30)
            ops["send/pp/control"] = 1
        if last and tp_rank == 0:
            ops["send/pp/sample"] = 32
        if first and tp_rank == 0:
            ops["recv/pp/sample"] = 32
    return ops


def test_every_collective_and_transfer_is_traced_per_step_and_phase(world):
    for rank in world[0]:
        for r in rank["runs"]:
            tp, pp = int(r["layout"][2]), int(r["layout"].split("-")[1][2:])
            assert r["ops"] == _expected_ops(tp, pp, r["stage"], r["tp"], len(r["layers"])), (
                r["layout"],
                r["rank"],
            )
            assert r["steps"] == NEW_TOKENS
            assert r["steps_total"] == NEW_TOKENS * (1 + len(PROMPTS) * ("pipelined_tokens" in r))


def test_odd_vocab_at_tp2_is_padded_and_matches_transformers(world, hf):
    """Vocabulary 255 at tp=2: each rank holds ceil(255/2) = 128 rows of the embedding and lm_head
    (the last of rank tp=1 zero padding, as vLLM pads); the padded logit is never sampled, so the
    greedy tokens and the 255 real logits equal transformers' on the unpadded model."""
    runs = {r["rank"]: r for r in (rank["odd_vocab"] for rank in world[0]) if r is not None}
    assert sorted(runs) == [0, 1, 2, 3]
    ref = hf.model(ODD, full_state_dict(ODD, SeededWeights(SEED)))
    assert runs[0]["tokens"] == hf.greedy(ref, PROMPTS, NEW_TOKENS)
    last = runs[2]  # stage 1, tp rank 0 (TP innermost: ranks 2, 3)
    assert last["stage"] == 1 and last["tp"] == 0 and runs[3]["local_logit_columns"] == 128
    assert runs[3]["last_local_logit"] == float("-inf") and last["last_local_logit"] > float("-inf")
    err = (torch.tensor(last["logits"]) - hf.last_logits(ref, PROMPTS)).abs().max().item()
    assert torch.tensor(last["logits"]).shape == (len(PROMPTS), 255) and err < 1e-4
    lay = Layout(2, 2, 1, (4, 4))
    for r in runs.values():
        assert all(shape == [128, 64] for shape in r["shapes"].values()) and len(r["shapes"]) == 1
        # hand formula: 4 layers x (36864/2 + 128) + 128 padded rows x 64, fp32
        assert r["param_bytes"] == 4 * (4 * 18560 + 128 * 64 + (64 if r["stage"] == 1 else 0))
        assert r["param_bytes"] == 4 * rank_params(ODD, lay, r["stage"])
