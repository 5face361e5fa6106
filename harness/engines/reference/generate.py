"""The simplest driver, for correctness: prefill every prompt at once, then greedy decode.

One micro-batch in flight at a time; rows use KV slots 0..B-1. The serving engine
(harness/engine) is the real driver; this one exists to compare against a reference.
"""

from __future__ import annotations

import torch

from harness.engines.reference.dist import DistContext
from harness.engines.reference.parallel.pp import PipelineStage, StepMeta


def _run_step(stage: PipelineStage, meta: StepMeta, ids: torch.Tensor) -> torch.Tensor:
    tokens = stage.submit(meta, ids)
    if tokens is None:
        _, tokens = stage.collect()
    return tokens


def generate(
    ctx: DistContext, stage: PipelineStage, prompts: list[list[int]], max_new_tokens: int
) -> list[list[int]] | None:
    """Greedy tokens per prompt on the coordinator (``max_new_tokens`` each); None on other ranks,
    which serve until the coordinator's stop."""
    if not stage.is_coordinator:
        stage.serve_forever()
        return None
    dev = ctx.device
    b = len(prompts)
    if b == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, each with at least one token")
    lens = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=dev)
    ids = torch.zeros(b, int(lens.max()), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    slots = torch.arange(b, dtype=torch.long, device=dev)
    out: list[list[int]] = [[] for _ in range(b)]
    # No try/finally around stop(): after a failure the peers may sit in a half-issued collective;
    # the process group timeout and torchrun's agent end the job instead.
    if max_new_tokens > 0:
        meta = StepMeta(
            0, slots, torch.zeros(b, dtype=torch.long, device=dev), lens, phase="prefill"
        )
        tokens = _run_step(stage, meta, ids.to(dev))
        pos = lens.clone()
        for step in range(1, max_new_tokens + 1):
            for i, t in enumerate(tokens.tolist()):
                out[i].append(t)
            if step == max_new_tokens:
                break
            meta = StepMeta(
                step,
                slots,
                pos.clone(),
                torch.ones(b, dtype=torch.long, device=dev),
                phase="decode",
            )
            tokens = _run_step(stage, meta, tokens.view(b, 1))
            pos += 1
    stage.stop()
    return out
