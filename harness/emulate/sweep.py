"""What an emulation measures: the sweep of points, the ranks, and the checks of both
(bad input raises ``UsageError`` in one line before anything is built or timed)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import UsageError
from harness.plan import planner
from harness.spec.layout import Layout

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_WEIGHT_LIMIT = 4 * 2**30  # a CPU emulation beyond this is a mistake (the tiny spec is ~0.2 MB)


@dataclass
class Sweep:
    batches: tuple[int, ...]
    contexts: tuple[int, ...]
    prefill: tuple[int, ...]
    iters: int
    graphs: bool = True
    budget_s: float | None = None  # stop starting new points after this long (per rank)


def default_sweep(device: torch.device) -> Sweep:
    if device.type == "cuda":
        return Sweep((1, 8, 32, 64, 128), (512, 2048), (512, 2048, 8192), 20)
    return Sweep((1, 4), (32, 96), (32, 96), 3)


def stage_kind(layout: Layout, stage: int) -> str:
    if layout.pp == 1:
        return "only"
    return "first" if stage == 0 else "last" if stage == layout.pp - 1 else "middle"


def default_ranks(layout: Layout) -> list[int]:
    """TP rank 0 of the first stage, of stage 1 (standing for every middle stage) and of the
    last."""
    stages = sorted({0, min(1, layout.pp - 1), layout.pp - 1})
    return [layout.rank_of(0, s, 0) for s in stages]


def check_sweep(spec, sweep: Sweep) -> None:
    ctx = spec.shape.max_context
    for name, vals, hi in (
        ("--batches", sweep.batches, None),
        ("--contexts", sweep.contexts, ctx - 1),
        ("--prefill", sweep.prefill, ctx),
    ):
        for v in vals:
            if v < 1 or (hi is not None and v > hi):
                raise UsageError(
                    f"{name}: {v} is out of range; use 1..{hi or 'any'} (model context {ctx})"
                )
    if sweep.iters < 1:
        raise UsageError(f"--iters: must be >= 1, got {sweep.iters}")


def check_cpu_size(spec, ranks: list[int], device: torch.device) -> None:
    """A CPU emulation is for small specs: refuse one whose rank holds more than
    CPU_WEIGHT_LIMIT."""
    if device.type != "cpu":
        return
    for rank in ranks:
        need = (
            planner.rank_params(spec.shape, spec.layout, spec.layout.place(rank).stage)
            * spec.dtype_bytes
        )
        if need > CPU_WEIGHT_LIMIT:
            raise UsageError(
                f"run.device: rank {rank} of {spec.shape.name} holds {need / 1e9:.1f} GB of "
                f"weights; "
                "emulate it on a GPU (a CPU emulation is for the tiny spec)"
            )


def pick_ranks(layout: Layout, rank: int | None, stage: int | None) -> list[int]:
    if rank is not None:
        if not 0 <= rank < layout.world_size:
            raise UsageError(
                f"--rank: {rank} is outside 0..{layout.world_size - 1} (tp*pp*dp ranks)"
            )
        return [rank]
    if stage is not None:
        if not 0 <= stage < layout.pp:
            raise UsageError(f"--stage: {stage} is outside 0..{layout.pp - 1} (parallel.pp stages)")
        return [layout.rank_of(0, stage, 0)]
    return default_ranks(layout)
