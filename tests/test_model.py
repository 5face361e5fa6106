"""Single process: our Llama (1 rank, no TP/PP) against transformers' LlamaForCausalLM, same
weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness.engines.reference.comm import single_process_comm
from harness.engines.reference.dist import DistContext, LaunchEnv
from harness.engines.reference.generate import generate
from harness.engines.reference.model.build import build_stage, check_tp, stage_param_bytes
from harness.engines.reference.model.llama import hf_param_shapes
from harness.engines.reference.model.weights import (
    CheckpointWeights,
    SeededWeights,
    Shard,
    full_state_dict,
    name_seed,
)
from harness.engines.reference.parallel.pp import (
    PipelineStage,
    StepMeta,
    pack_header,
    step_phase,
    unpack_header,
)
from harness.engines.reference.parallel.tp import greedy_sample
from harness.errors import UsageError
from harness.spec.layout import Layout

CPU = torch.device("cpu")
L = torch.long


def _single(shape, weights, slots=8, max_seq=64):
    layout = Layout(1, 1, 1, (shape.num_layers,))
    comm = single_process_comm()
    model = build_stage(
        shape, layout, layout.place(0), comm, dtype=torch.float32, device=CPU, weights=weights
    )
    model.allocate_kv(slots, max_seq)
    ctx = DistContext(
        LaunchEnv(0, 1, 0, 1, None, False), layout, layout.place(0), CPU, "none", comm
    )
    return ctx, model


def _padded(rows):
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=L)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids


def _t(xs):
    return torch.tensor(xs, dtype=L)


@pytest.fixture(scope="module")
def seeded(tiny, hf):
    weights = SeededWeights(seed=7)
    ref = hf.model(tiny, full_state_dict(tiny, SeededWeights(seed=7)))
    return weights, ref


def test_prefill_logits_match_transformers(tiny, hf, seeded, prompts):
    _, model = _single(tiny, seeded[0])
    ids, lens = _padded(prompts), _t([len(p) for p in prompts])
    zero, slots = torch.zeros(4, dtype=L), torch.arange(4)
    full = model.forward_all_logits(ids, slots, zero, lens)
    assert full.dtype == torch.float32 and full.shape == (4, ids.shape[1], tiny.vocab)
    for i, p in enumerate(prompts):
        ref = hf.all_logits(seeded[1], p)
        assert torch.allclose(full[i, : len(p)], ref, atol=1e-4, rtol=0), (
            (full[i, : len(p)] - ref).abs().max()
        )
    # forward() returns the last valid token's logits of each padded row
    model.allocate_kv(8, 64)
    last = model(ids, slots, zero, lens)
    assert torch.allclose(last, hf.last_logits(seeded[1], prompts), atol=1e-4, rtol=0)


def test_greedy_16_tokens_match_transformers(tiny, hf, seeded, prompts):
    ctx, model = _single(tiny, seeded[0])
    stage = PipelineStage(ctx, model, max_batch=4, max_tokens=64)
    ours = generate(ctx, stage, prompts, 16)
    assert ours == hf.greedy(seeded[1], prompts, 16)
    assert [t["step"] for t in stage.timings] == list(range(16))  # 1 prefill + 15 decode steps
    phases = [r["phase"] for r in ctx.comm.rec.as_dicts()]
    assert phases == []  # one rank: no collective is issued at all


def test_mixed_batch_prefill_chunk_and_decode_rows(tiny, hf, seeded):
    """Rows of one padded batch: a decode row, a fresh prefill, and a prefill chunk on top of a
    cache."""
    _, model = _single(tiny, seeded[0])
    a, b, c = [5, 6, 7, 8, 9, 10], [100, 101, 102, 103, 104, 105, 106, 107], [42, 43, 44]
    # step 1: prefill a (slot 3) and the first 5 tokens of b (slot 0)
    model(_padded([a, b[:5]]), _t([3, 0]), _t([0, 0]), _t([6, 5]))
    # step 2, mixed: a decodes token 61, c prefills into slot 5, b's remaining 3 tokens
    # chunk-prefill
    rows = [[61], c, b[5:]]
    got = model.forward_all_logits(_padded(rows), _t([3, 5, 0]), _t([6, 0, 5]), _t([1, 3, 3]))
    ref = seeded[1]
    assert torch.allclose(got[0, 0], hf.all_logits(ref, a + [61])[-1], atol=1e-4, rtol=0)
    assert torch.allclose(got[1, :3], hf.all_logits(ref, c), atol=1e-4, rtol=0)
    assert torch.allclose(got[2, :3], hf.all_logits(ref, b)[5:], atol=1e-4, rtol=0)
    # step 3: decode all three, in another row order
    got = model(_t([[7], [62], [8]]), _t([0, 3, 5]), _t([8, 7, 3]), _t([1, 1, 1]))
    want = hf.last_logits(ref, [b + [7], a + [61, 62], c + [8]])
    assert torch.allclose(got, want, atol=1e-4, rtol=0)


def test_llama3_rope_scaling_matches_transformers(tiny, hf):
    # orig context 32: head_dim 16 has wavelengths kept (<8), blended (8..32) and scaled (>32).
    shape = dataclasses.replace(
        tiny,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    )
    ref = hf.model(shape, full_state_dict(shape, SeededWeights(3)))
    _, model = _single(shape, SeededWeights(3))
    prompt = [(i * 11) % 256 for i in range(40)]
    got = model.forward_all_logits(_t([prompt]), _t([0]), _t([0]), _t([40]))[0]
    assert torch.allclose(got, hf.all_logits(ref, prompt), atol=1e-4, rtol=0)
    plain = dataclasses.replace(shape, rope_scaling=None)
    _, unscaled = _single(plain, SeededWeights(3))
    other = unscaled.forward_all_logits(_t([prompt]), _t([0]), _t([0]), _t([40]))[0]
    assert (other - got).abs().max() > 1e-3  # the scaling really changed something


def test_checkpoint_sharded_files_load_and_match(tiny, hf, prompts, tmp_path):
    ref = hf.model(tiny, seed=11)  # transformers' own init: nothing in common with SeededWeights
    ref.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="300KB")
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) >= 2 and (tmp_path / "model.safetensors.index.json").is_file()
    weights = CheckpointWeights(tmp_path)
    ctx, model = _single(tiny, weights)
    assert torch.allclose(
        model(
            _padded(prompts),
            torch.arange(4),
            torch.zeros(4, dtype=L),
            _t([len(p) for p in prompts]),
        ),
        hf.last_logits(ref, prompts),
        atol=1e-4,
        rtol=0,
    )
    model.allocate_kv(8, 64)
    assert generate(ctx, PipelineStage(ctx, model, 4, 64), prompts, 16) == hf.greedy(
        ref, prompts, 16
    )
    # a shard reads exactly the slice of the stored tensor
    name = "model.layers.2.mlp.down_proj.weight"
    part = weights.load(name, (64, 128), Shard(1, 1, 2), torch.float32, CPU)
    assert torch.equal(part, ref.state_dict()[name][:, 64:])


def test_checkpoint_bad_inputs_raise_usage_error(tiny, hf, tmp_path):
    with pytest.raises(UsageError, match="not found"):
        CheckpointWeights(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="config.json"):
        CheckpointWeights(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="model.safetensors"):
        CheckpointWeights(tmp_path / "empty")
    # a checkpoint of another shape: the mismatch names the tensor and the file
    other = dataclasses.replace(tiny, vocab=512)
    hf.model(other, seed=1).save_pretrained(
        tmp_path / "other", safe_serialization=True, max_shard_size="300KB"
    )
    with pytest.raises(
        UsageError,
        match=r"model\.embed_tokens\.weight in model-0000\d-of-0000\d\.safetensors "
        r"has shape \[512, 64\]",
    ):
        _single(tiny, CheckpointWeights(tmp_path / "other"))
    # an index naming a tensor its file lacks, and a file the index lists but that is missing
    index_path = tmp_path / "other" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    fname = index["weight_map"]["model.norm.weight"]
    index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = (
        fname
        if fname != index["weight_map"]["model.layers.0.mlp.up_proj.weight"]
        else index["weight_map"]["lm_head.weight"]
    )
    index_path.write_text(json.dumps(index))
    src = CheckpointWeights(tmp_path / "other")
    with pytest.raises(UsageError, match="model.layers.0.mlp.up_proj.weight is missing from"):
        src.load("model.layers.0.mlp.up_proj.weight", (128, 64), None, torch.float32, CPU)
    with pytest.raises(
        UsageError, match="tensor model.layers.99.mlp.up_proj.weight is missing from the checkpoint"
    ):
        src.load("model.layers.99.mlp.up_proj.weight", (128, 64), None, torch.float32, CPU)
    (tmp_path / "other" / fname).unlink()
    with pytest.raises(
        UsageError, match=f"{fname} is listed in model.safetensors.index.json but missing"
    ):
        CheckpointWeights(tmp_path / "other")


def test_seeded_weights_are_a_function_of_seed_and_name_only(tiny):
    # sha256-based: the same value in every process and every run (Python's hash() is salted)
    # (first 8 bytes of sha256(b"0:lm_head.weight"), little-endian, top bit cleared)
    assert name_seed(0, "lm_head.weight") == 0x61EE0F53C9A83FC5
    assert name_seed(1, "lm_head.weight") != name_seed(0, "lm_head.weight")
    w = SeededWeights(5)
    full = w.load("model.layers.1.mlp.up_proj.weight", (128, 64), None, torch.float32, CPU)
    for k in range(4):
        part = SeededWeights(5).load(
            "model.layers.1.mlp.up_proj.weight", (128, 64), Shard(0, k, 4), torch.float32, CPU
        )
        assert torch.equal(part, full[32 * k : 32 * (k + 1)])
    cols = w.load(
        "model.layers.1.mlp.up_proj.weight", (128, 64), Shard(1, 1, 2), torch.bfloat16, CPU
    )
    assert cols.dtype == torch.bfloat16 and torch.equal(cols, full[:, 32:].bfloat16())
    assert not torch.equal(
        full, w.load("model.layers.2.mlp.up_proj.weight", (128, 64), None, torch.float32, CPU)
    )
    assert abs(float(full.std()) - 0.02) < 0.002
    assert torch.equal(w.load("model.norm.weight", (64,), None, torch.float32, CPU), torch.ones(64))
    # the transient peak is one full fp32 parameter; what is handed out is only the shard
    w2 = SeededWeights(5)
    w2.load("model.embed_tokens.weight", (256, 64), Shard(0, 1, 2), torch.float32, CPU)
    assert (w2.stats.returned_bytes, w2.stats.peak_transient_bytes) == (128 * 64 * 4, 256 * 64 * 4)


def test_param_bytes_and_names_match_the_hf_model(tiny):
    _, model = _single(tiny, SeededWeights(0))
    names = dict(model.named_parameters())
    assert {n: tuple(p.shape) for n, p in names.items()} == hf_param_shapes(tiny)
    # 8 layers x (2*64*64 + 2*64*32 + 3*64*128 + 2*64) + 2 * 256*64 + 64, 4 bytes each
    assert stage_param_bytes(model) == (8 * 36992 + 2 * 16384 + 64) * 4 == tiny.total_params() * 4


def test_tp_larger_than_kv_heads_is_rejected(tiny):
    with pytest.raises(UsageError, match="num_kv_heads=2"):
        check_tp(tiny, 4)
    with pytest.raises(UsageError, match="4 does not divide model.intermediate=102"):
        check_tp(dataclasses.replace(tiny, num_kv_heads=4, intermediate=102), 4)


def test_kv_cache_capacity_and_bytes(tiny):
    _, model = _single(tiny, SeededWeights(0))
    # 8 layers x K and V x 3 slots x 2 kv heads x 10 positions x 16 dims x 4 bytes
    assert model.allocate_kv(3, 10) == 8 * 2 * 3 * 2 * 10 * 16 * 4
    with pytest.raises(ValueError, match="position 11"):
        model(_t([[1] * 11]), _t([0]), _t([0]), _t([11]))


def test_header_round_trip_and_phase():
    meta = StepMeta(9, _t([4, 1]), _t([0, 12]), _t([7, 1]))
    hdr = pack_header(meta, 7, max_batch=3, device=CPU)
    assert hdr.tolist() == [9, 2, 7, 2 * 3, 4, 1, 0, 0, 12, 0, 7, 1, 0]  # phase 'mixed' = 3, << 1
    back, width = unpack_header(hdr, 3)
    assert (back.step, width, back.stop, back.phase) == (9, 7, False, "mixed")
    assert back.slots == [4, 1] and back.start_pos == [0, 12] and back.n_tokens == [7, 1]
    assert (
        step_phase(_t([3, 5]), _t([1, 1])) == "decode"
        and step_phase(_t([0, 5]), _t([1, 4])) == "prefill"
    )
    with pytest.raises(ValueError, match="max_batch=1"):
        pack_header(meta, 7, max_batch=1, device=CPU)


def test_greedy_sample_single_rank_ties_to_lowest_id():
    comm = single_process_comm()
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 1.0, 5.0, 5.0]])
    assert greedy_sample(logits, comm).tolist() == [1, 0]


def test_padded_vocab_shards_hold_the_real_rows_then_zeros(tiny, hf, tmp_path):
    """Vocabulary 255 over tp=2: part 0 holds rows 0-127, part 1 rows 128-254 and one zero row
    (vLLM's padding), from seeded weights and from a checkpoint alike; an unpadded uneven split
    stays an error."""
    odd = dataclasses.replace(tiny, vocab=255)
    ref = hf.model(odd, seed=3)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    full = ref.state_dict()["model.embed_tokens.weight"]
    seeded_full = SeededWeights(5).load("lm_head.weight", (255, 64), None, torch.float32, CPU)
    for source, want in ((CheckpointWeights(tmp_path), full), (SeededWeights(5), seeded_full)):
        name = (
            "model.embed_tokens.weight"
            if isinstance(source, CheckpointWeights)
            else "lm_head.weight"
        )
        p0 = source.load(name, (255, 64), Shard(0, 0, 2, padded=True), torch.float32, CPU)
        p1 = source.load(name, (255, 64), Shard(0, 1, 2, padded=True), torch.float32, CPU)
        assert p0.shape == p1.shape == (128, 64)
        assert (
            torch.equal(p0, want[:128]) and torch.equal(p1[:127], want[128:]) and not p1[127].any()
        )
    with pytest.raises(UsageError, match="2 does not divide a weight dimension of 255"):
        Shard(0, 1, 2).local_shape((255, 64))
