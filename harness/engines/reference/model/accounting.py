"""An independent count of each rank's weight bytes, beside the planner's closed formula.

The planner computes a rank's parameters from the model shape (``harness.plan.memory.rank_params``,
docs/formulas.md). Here the rank's stage is built the way ``build_stage`` builds it, on the meta
device (no memory): the stage's modules, then the TP plan shrinking them to this rank's shard
(padding included); and accelerate's module-size accounting
(``accelerate.utils.compute_module_sizes``,
what ``infer_auto_device_map`` plans with) counts its parameters at the run's dtype. Two
computations that share no arithmetic: when they disagree the formula (or the model code) is wrong.
Every rank of a run counts its own stage before serving (``cross_checks`` of its summary);
``harness plan --check-weights`` counts every stage without a run. accelerate is optional at run
time (the lent GPU machines have none): without it a run skips this count and its summary says
so; ``--check-weights`` asks for it."""

from __future__ import annotations

import importlib.util

import torch

from harness.engines.reference.comm import Comm, CommRecorder
from harness.engines.reference.model.llama import StageModel
from harness.engines.reference.parallel.tp import LLAMA_TP_PLAN, apply_tp
from harness.errors import UsageError
from harness.spec.catalog import ModelShape
from harness.spec.layout import Layout

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def have_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def meta_rank_bytes(shape: ModelShape, layout: Layout, rank: int, dtype: str) -> int:
    """Bytes of the parameters ``rank`` holds, by accelerate's accounting of its meta-device
    stage."""
    if not have_accelerate():
        raise UsageError(
            "--check-weights: accelerate is not installed; pip install accelerate, or leave out "
            "--check-weights"
        )
    from accelerate.utils import compute_module_sizes

    place = layout.place(rank)
    tp_group = next(g for g in layout.tp_groups() if rank in g)
    comm = Comm({"tp": (None, tp_group)}, CommRecorder(rank, "off"))  # sizes only: no process group
    first, last = place.stage == 0, place.stage == layout.pp - 1
    with torch.device("meta"):
        model = StageModel(
            shape,
            layout.layers_of_stage(place.stage),
            stage=place.stage,
            is_first=first,
            is_last=last,
        )
    apply_tp(model, LLAMA_TP_PLAN, comm)
    if shape.tie_embeddings and first and last:
        # one tensor, as build_stage ties them
        model.lm_head.weight = model.model.embed_tokens.weight
    return int(compute_module_sizes(model, dtype=DTYPES[dtype])[""])


def weight_cross_check(spec, plan) -> list[dict]:
    """One row per stage (its first and last TP rank, the ones padding could tell apart): the
    planner's weight bytes vs accelerate's count of the meta-device stage; ``ok`` when equal to the
    byte."""
    rows = []
    lay = spec.layout
    for st in plan.stages:
        for rank in sorted({st.ranks[0], st.ranks[-1]}):
            want = plan.ranks[rank].weight_bytes
            got = meta_rank_bytes(spec.shape, lay, rank, spec.model.dtype)
            rows.append(
                {
                    "name": f"weights stage {st.stage} rank {rank} (accelerate)",
                    "expected": want,
                    "measured": got,
                    "ok": want == got,
                    "detail": "planner formula vs accelerate compute_module_sizes of the "
                    "meta-device stage",
                }
            )
    return rows
