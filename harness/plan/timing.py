"""Planner, time floors: FLOPs and HBM bytes of one stage's forward, the roofline floor, and
``Timing`` (compute + communication floors of a replica's stages).

Pure arithmetic, no torch. Units and symbols as in ``harness.plan.planner``; formulas in
docs/formulas.md."""

from __future__ import annotations

from dataclasses import dataclass

from harness.plan.comm import Links, comm_time_s
from harness.plan.memory import kv_bytes_per_token, rank_params
from harness.spec.catalog import GpuSpec, ModelShape
from harness.spec.layout import Layout


def stage_flops(
    shape: ModelShape, layout: Layout, stage: int, rows: int, tokens: int, context: float
) -> float:
    """FLOPs of one TP rank of ``stage`` for ``rows`` rows of ``tokens`` new tokens after
    ``context`` cached ones: 2·M_s·B·T + [last] 2·(⌈V/t⌉·h)·B + 4·L_s·(q_dim/t)·B·(T·c + T(T+1)/2),
    M_s = L_s·(P_layer − 2h)/t the layers' matmul weights; lm_head runs on the last position of
    each row only; attention QKᵀ and AV cost 2·2·q_dim/t per (query, key) pair, causal."""
    t, h = layout.tp, shape.hidden
    layers = layout.layer_split[stage]
    matmul = layers * (shape.layer_params() - 2 * h) / t
    f = 2.0 * matmul * rows * tokens
    if stage == layout.pp - 1:
        f += 2.0 * shape.vocab_shard(t) * h * rows
    f += 4.0 * layers * shape.q_dim / t * rows * (tokens * context + tokens * (tokens + 1) / 2)
    return f


def stage_bytes_read(
    shape: ModelShape,
    layout: Layout,
    stage: int,
    dtype_bytes: int,
    rows: int,
    tokens: int,
    context: float,
) -> float:
    """HBM bytes one TP rank of ``stage`` must touch: its weights (the embedding table only for
    the B·T rows looked up) + the KV cache of the batch's context and new tokens:
    W_s − [first]·(⌈V/t⌉·h)·d + [first]·B·T·(h/t)·d + B·(c + T)·kv_s."""
    w = rank_params(shape, layout, stage) * dtype_bytes
    if stage == 0:
        if not (
            shape.tie_embeddings and layout.pp == 1
        ):  # a tied table is read whole by the lm_head
            w -= shape.vocab_shard(layout.tp) * shape.hidden * dtype_bytes
        w += rows * tokens * shape.hidden // layout.tp * dtype_bytes
    return w + rows * (context + tokens) * kv_bytes_per_token(shape, layout, stage, dtype_bytes)


def compute_floor_s(gpu: GpuSpec, flops: float, nbytes: float) -> float:
    """Roofline floor: max(bytes / HBM bandwidth, FLOPs / dense peak)."""
    return max(nbytes / (gpu.hbm_gbps * 1e9), flops / (gpu.bf16_tflops * 1e12))


@dataclass(frozen=True)
class Timing:
    """Floors of one replica's stages; ``latency`` = compute + comm (a micro-batch's own ops are
    serial), ``occupancy`` = max(compute, comm) (another micro-batch may overlap them)."""

    shape: ModelShape
    layout: Layout
    gpu: GpuSpec
    dtype_bytes: int
    max_batch: int
    links: Links

    def compute(self, s: int, rows: int, tokens: int, context: float) -> float:
        return compute_floor_s(
            self.gpu,
            stage_flops(self.shape, self.layout, s, rows, tokens, context),
            stage_bytes_read(self.shape, self.layout, s, self.dtype_bytes, rows, tokens, context),
        )

    def comm(self, s: int, rows: int, tokens: int) -> float:
        return comm_time_s(
            self.shape, self.layout, self.dtype_bytes, self.max_batch, self.links, s, rows, tokens
        )

    def latency(self, s: int, rows: int, tokens: int, context: float) -> float:
        return self.compute(s, rows, tokens, context) + self.comm(s, rows, tokens)

    def occupancy(self, s: int, rows: int, tokens: int, context: float) -> float:
        return max(self.compute(s, rows, tokens, context), self.comm(s, rows, tokens))
