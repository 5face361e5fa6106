"""Build one rank's stage: its layers, its TP shard, materialised directly in sharded form.

Order: modules on the meta device (no memory) -> TP plan shrinks the split weights to their
local shapes (still meta) -> each parameter is replaced, one at a time, by the tensor the weight
source returns for this rank's shard. So a rank holds at most its share plus what the source
needs transiently for one parameter (see SeededWeights); never the full model.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.engines.reference.comm import Comm
from harness.engines.reference.model.llama import StageModel, hf_param_shapes
from harness.engines.reference.model.weights import WeightSource, local_shape
from harness.engines.reference.parallel.tp import LLAMA_TP_PLAN, apply_tp
from harness.errors import UsageError
from harness.spec.catalog import ModelShape
from harness.spec.layout import Layout, RankPlace

__all__ = ["StageModel", "build_stage", "check_tp", "stage_param_bytes"]


def check_tp(shape: ModelShape, tp: int) -> None:
    """Every TP-split dimension must divide evenly (the vocabulary is padded instead); KV heads are
    split, never replicated."""
    if shape.num_kv_heads < tp:
        raise UsageError(
            f"parallel.tp: {tp} exceeds model.num_kv_heads={shape.num_kv_heads}; KV heads are "
            f"split "
            f"across TP ranks, not replicated; use tp <= {shape.num_kv_heads}"
        )
    for what, n in (
        ("num_heads", shape.num_heads),
        ("num_kv_heads", shape.num_kv_heads),
        ("intermediate", shape.intermediate),
    ):
        if n % tp:
            raise UsageError(
                f"parallel.tp: {tp} does not divide model.{what}={n}; pick a tp that divides it"
            )


def _source_name(name: str, shape: ModelShape) -> str:
    """A tied lm_head reads the embedding's tensor (HF checkpoints omit lm_head.weight then)."""
    if shape.tie_embeddings and name == "lm_head.weight":
        return "model.embed_tokens.weight"
    return name


def build_stage(
    shape: ModelShape,
    layout: Layout,
    place: RankPlace,
    comm: Comm,
    *,
    dtype: torch.dtype,
    device: torch.device,
    weights: WeightSource,
    column_major: bool = True,
) -> StageModel:
    """This rank's stage with its shards loaded. ``column_major`` (CPU only): store the matmul
    weights column-major (``_gemm_friendly``). A run with a torch.profiler window passes False:
    with torch 2.13 (CPU) the profiler and these transposed-view weights together corrupted the
    heap of a rank ("free(): invalid next size") in 7 of 10 TP2-PP2-DP2 runs, against 0 of 3
    with row-major weights and 0 of 3 without the profiler; the cause inside torch is not known."""
    check_tp(shape, layout.tp)
    if comm.size("tp") != layout.tp:
        raise ValueError(
            f"comm's TP group has {comm.size('tp')} ranks, the layout says {layout.tp}"
        )
    layers = layout.layers_of_stage(place.stage)
    with torch.device("meta"):
        model = StageModel(
            shape,
            layers,
            stage=place.stage,
            is_first=place.stage == 0,
            is_last=place.stage == layout.pp - 1,
        )
    shards = apply_tp(model, LLAMA_TP_PLAN, comm)
    global_shapes = hf_param_shapes(shape)
    if shape.tie_embeddings:
        global_shapes["lm_head.weight"] = global_shapes["model.embed_tokens.weight"]
    for name, param in list(model.named_parameters()):
        gshape = global_shapes[name]
        shard = shards.get(name)
        want = local_shape(gshape, shard)
        if tuple(param.shape) != want:
            raise RuntimeError(f"{name}: module holds {tuple(param.shape)} but its shard is {want}")
        tensor = weights.load(_source_name(name, shape), gshape, shard, dtype, device)
        if tuple(tensor.shape) != want:
            raise RuntimeError(
                f"{name}: weight source returned {tuple(tensor.shape)}, expected {want}"
            )
        if (
            column_major
            and device.type == "cpu"
            and name.endswith(("_proj.weight", "lm_head.weight"))
        ):
            tensor = _gemm_friendly(tensor)
        owner_name, _, pname = name.rpartition(".")
        setattr(model.get_submodule(owner_name), pname, nn.Parameter(tensor, requires_grad=False))
    if shape.tie_embeddings and model.is_first and model.is_last:
        model.lm_head.weight = model.model.embed_tokens.weight  # one tensor, as HF ties them
    model.init_rope(device)
    return model.eval()


def _gemm_friendly(weight: torch.Tensor) -> torch.Tensor:
    """The same ``[out, in]`` values stored column-major (a transposed view of an ``[in, out]``
    buffer): ``F.linear`` then hands the CPU BLAS a row-major right operand. On this project's CPU
    (MKL on AMD EPYC, fp32) that is 1.3-2x faster at 32-64 rows than the transposed operand a
    row-major weight gives, and no slower at 1 or 512 rows (docs/performance.md)."""
    return weight.t().contiguous().t()


def stage_param_bytes(model: nn.Module) -> int:
    """Bytes of the parameters this rank holds (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():  # parameters() already yields a tied tensor once
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total
