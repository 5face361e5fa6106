"""Tests that need a CUDA GPU; run by launch/gpu_check.sh (``pytest -m gpu``), skipped elsewhere.

- our StageModel (one rank holding the whole model) against transformers' LlamaForCausalLM on
  CUDA with the same seeded weights: fp32 vs fp32 to fp32 precision, bf16 vs the fp32 reference
  within bf16 tolerance (relative error ‖ours − ref‖/‖ref‖ of the logits, and the share of
  positions whose argmax — the greedy token — agrees);
- the emulator's CUDA-graph decode step computes what the eager step does, for each rank type;
- the NVML sampler reads real values from the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.spec.catalog import ModelShape

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (run launch/gpu_check.sh)"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
# Small enough to build in a second, large enough for real GEMM and attention kernels.
SHAPE = ModelShape(
    "gpu-test",
    hidden=1024,
    num_layers=4,
    num_heads=16,
    num_kv_heads=4,
    head_dim=64,
    intermediate=2816,
    vocab=8192,
    max_context=2048,
)
ROWS, T = 4, 96


def _ours(dtype: torch.dtype):
    from harness.engines.reference.comm import single_process_comm
    from harness.engines.reference.model.build import build_stage
    from harness.engines.reference.model.weights import SeededWeights
    from harness.spec.layout import Layout

    lay = Layout(1, 1, 1, (SHAPE.num_layers,))
    model = build_stage(
        SHAPE,
        lay,
        lay.place(0),
        single_process_comm(),
        dtype=dtype,
        device=torch.device("cuda"),
        weights=SeededWeights(0),
    )
    model.allocate_kv(ROWS, T)
    return model


@pytest.fixture(scope="module")
def reference(hf):
    """fp32 logits [ROWS, T, vocab] of transformers' model with the same seeded weights, on CUDA."""
    from harness.engines.reference.model.weights import SeededWeights, full_state_dict

    sd = full_state_dict(SHAPE, SeededWeights(0), torch.float32, "cuda")
    ref = hf.model(SHAPE, {k: v.cpu() for k, v in sd.items()}).cuda()
    gen = torch.Generator(device="cuda").manual_seed(7)
    ids = torch.randint(0, SHAPE.vocab, (ROWS, T), device="cuda", generator=gen)
    with torch.no_grad():
        logits = ref(ids, use_cache=False).logits.float()
    del ref
    torch.cuda.empty_cache()
    return ids, logits


def _logits(model, ids):
    n = ids.shape[0]
    dev = ids.device
    return model.forward_all_logits(
        ids,
        torch.arange(n, device=dev),
        torch.zeros(n, dtype=torch.long, device=dev),
        torch.full((n,), ids.shape[1], dtype=torch.long, device=dev),
    )


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_fp32_stage_equals_transformers_on_cuda(reference):
    ids, ref = reference
    out = _logits(_ours(torch.float32), ids)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 1e-4
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean().item() > 0.99


def test_bf16_stage_close_to_fp32_reference(reference):
    ids, ref = reference
    out = _logits(_ours(torch.bfloat16), ids)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 3e-2  # bf16 operands: 1e-3 .. 1e-2
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= 0.75, f"greedy tokens agree at {agree:.0%} of positions"


def test_bf16_decode_steps_follow_prefill(reference):
    """Prefill T-8 tokens, then 8 single-token decode steps: the same logits as one prefill of T."""
    ids, _ = reference
    model = _ours(torch.bfloat16)
    full = _logits(model, ids)[:, -9:-1]
    dev, n, k = ids.device, ids.shape[0], T - 8
    slots = torch.arange(n, device=dev)
    steps = [
        model(
            ids[:, :k],
            slots,
            torch.zeros(n, dtype=torch.long, device=dev),
            torch.full((n,), k, dtype=torch.long, device=dev),
        )
    ]
    for i in range(k, T - 1):
        steps.append(
            model(
                ids[:, i : i + 1],
                slots,
                torch.full((n,), i, dtype=torch.long, device=dev),
                torch.ones(n, dtype=torch.long, device=dev),
            )
        )
    stepped = torch.stack(steps, dim=1)
    assert _rel(stepped, full) < 2e-2
    assert (stepped.argmax(-1) == full.argmax(-1)).float().mean().item() >= 0.8


@pytest.mark.parametrize("rank", [0, 2, 6])
def test_cuda_graph_decode_equals_eager_step(rank):
    from harness.emulate import Peaks, Sweep, emulate_rank
    from harness.spec.spec import load_spec

    spec = load_spec(
        ROOT / "configs" / "tiny-tp2-pp4-cpu.yaml", ["run.device=cuda", "model.dtype=bf16"]
    )
    dev = torch.device("cuda")
    ceilings = Peaks("unused here", 1.0, 1, 1.0, 1, "bfloat16", 1)  # only the ratios use them
    res = emulate_rank(spec, rank, Sweep((1, 4), (32,), (16,), 3), dev, ceilings)
    for pt in res.decode:
        assert pt.mode == "cuda_graph", pt.note
        assert pt.check.startswith("ok") and pt.step_s > 0 and pt.capture_s > 0
    assert res.prefill[0].step_s > 0
    if rank != 6:
        assert all(pt.comm == pt.comm_expected for pt in res.decode + res.prefill)


def test_nvml_sampler_reads_the_gpu():
    """The sampler finds CUDA device 0 in NVML by its UUID (NVML may number the GPUs otherwise
    than CUDA does, e.g. under CUDA_VISIBLE_DEVICES) and reads real values from it."""
    from harness.engines.reference.dist import device_uuid
    from harness.measure.nvml import HOST_DEVICE, NvmlSampler, summarize_nvml

    a = torch.randn(4096, 4096, device="cuda")
    with NvmlSampler(interval_s=0.05, uuids=[device_uuid(torch.device("cuda", 0))]) as s:
        for _ in range(50):
            a = a @ a
            a = a / a.norm()
        torch.cuda.synchronize()
    assert s.using_nvml, s.note
    rows = [r for r in s.rows() if r["device"] != HOST_DEVICE]
    assert len(rows) > 0 and len({r["device"] for r in rows}) == 1  # that one GPU, whatever index
    assert all(r["mem_total_bytes"] and r["mem_total_bytes"] > 0 for r in rows)
    assert max(r["mem_used_bytes"] for r in rows) > 0
    assert summarize_nvml(rows)[0]["samples"] == len(rows)


def _steps_on(model, steps, dev):
    out = []
    for rows, slots, start in steps:
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, device=dev)
        t = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
        out.append(model.forward_all_logits(ids, t(slots), t(start), t([len(r) for r in rows])))
    return out


def test_every_kernel_this_torch_has_equals_the_rows_kernel_on_mixed_batches():
    """bf16 on CUDA: the kernel this torch gets (docs/performance.md: paged on torch >= 2.12,
    varlen on 2.10/2.11) and the batched one each give, over prefills, a chunk on top of a cache
    and decode rows in any slot order, the logits of the same model on the rows kernel (one SDPA
    per row), within bf16 rounding, and none falls back."""
    from harness.engines.reference.model.attention import choose_kernel

    dev = torch.device("cuda")
    d = [(i * 29) % SHAPE.vocab for i in range(300)]
    steps = [
        ([d[:40], d[40:45]], [3, 0], [0, 0]),
        ([[61], d[45:80], d[80:300]], [3, 1, 0], [40, 0, 5]),
        ([[7], [62], [8]], [0, 3, 1], [225, 41, 35]),
    ]
    chosen = choose_kernel(dev, torch.bfloat16, SHAPE.head_dim, 512)
    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert chosen == (
        "paged" if version >= (2, 12) else "varlen" if version >= (2, 10) else "batched"
    )
    rows = _ours(torch.bfloat16)
    rows.allocate_kv(4, 300, 512)
    rows.kernel = "rows"
    want = _steps_on(rows, steps, dev)
    for kernel in sorted({chosen, "batched"}):
        model = _ours(torch.bfloat16)
        model.allocate_kv(4, 300, 512)
        assert model.slot_len == 512
        model.kernel = kernel
        for got, ref in zip(_steps_on(model, steps, dev), want):
            assert torch.isfinite(got).all()
            assert _rel(got, ref) < 2e-2, kernel  # two bf16 kernels, two roundings
            assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9, kernel
        assert model.kernel == kernel and not model.failed_kernels


def test_stage_timing_takes_no_sync_per_step(monkeypatch, prompts):
    """On a real GPU: 16 steps of one rank are timed by events; the device is synchronized only for
    the clock's base and once to resolve, and every stamp comes out in order."""
    from harness.engines.reference.comm import single_process_comm
    from harness.engines.reference.dist import DistContext, LaunchEnv
    from harness.engines.reference.generate import generate
    from harness.engines.reference.parallel.pp import PipelineStage
    from harness.spec.layout import Layout

    model = _ours(torch.bfloat16)
    model.allocate_kv(8, 64)
    lay = Layout(1, 1, 1, (SHAPE.num_layers,))
    comm = single_process_comm()
    ctx = DistContext(
        LaunchEnv(0, 1, 0, 1, None, False), lay, lay.place(0), torch.device("cuda"), "none", comm
    )
    stage = PipelineStage(ctx, model, max_batch=4, max_tokens=64)
    calls, real = [], torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (calls.append(1), real(*a))[1])
    generate(ctx, stage, prompts, 16)
    assert len(calls) == 2  # the base event's
    rows = stage.timings
    assert len(calls) == 3 and [r["step"] for r in rows] == list(range(16))
    assert all(
        r["t_recv_start"] <= r["t_recv_end"] <= r["t_compute_end"] <= r["t_send_end"] for r in rows
    )
    assert all(a["t_send_end"] <= b["t_recv_start"] for a, b in zip(rows, rows[1:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_graphs_give_the_eager_tokens(prompts, dtype):
    """``run.cuda_graphs`` (issue 28 item 3): 16 greedy tokens through a pipeline stage whose
    decode steps replay CUDA graphs (3 prompts: the bucket of 4, one padding row) equal the eager
    stage's, and every decode step was a replay where the kernel allows graphs (``paged``,
    ``batched``)."""
    from harness.engines.reference.comm import single_process_comm
    from harness.engines.reference.dist import DistContext, LaunchEnv
    from harness.engines.reference.generate import generate
    from harness.engines.reference.parallel.graphs import DecodeGraphs
    from harness.engines.reference.parallel.pp import PipelineStage
    from harness.spec.layout import Layout

    lay = Layout(1, 1, 1, (SHAPE.num_layers,))
    out = {}
    for graphs in (False, True):
        model = _ours(dtype)
        model.allocate_kv(8, 64)
        comm = single_process_comm()
        ctx = DistContext(
            LaunchEnv(0, 1, 0, 1, None, False),
            lay,
            lay.place(0),
            torch.device("cuda"),
            "none",
            comm,
        )
        stage = PipelineStage(ctx, model, max_batch=8, max_tokens=256)
        if graphs:
            stage.graphs = DecodeGraphs(stage, 8, 8)
        out[graphs] = generate(ctx, stage, prompts[:3], 16)
        if graphs and model.kernel in ("paged", "batched"):
            assert stage.graphs.replays == 15 and set(stage.graphs.graphs) == {4}
    assert out[True] == out[False]
