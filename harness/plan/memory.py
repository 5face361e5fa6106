"""Planner, memory: parameters, KV-cache bytes and forward workspace of one rank; imbalance ε.

Pure arithmetic, no torch. Units and symbols as in ``harness.plan.planner``; formulas in
docs/formulas.md."""

from __future__ import annotations

from harness.spec.catalog import ModelShape
from harness.spec.layout import Layout

LOGIT_BYTES = 4  # logits are kept in fp32 for sampling
KV_PAGE_TOKENS = 256  # positions per page of the paged KV layout (flash attention's paged KV)


def rank_params(shape: ModelShape, layout: Layout, stage: int) -> int:
    """Parameters held by one TP rank of ``stage``.

    L_s·(P_layer − 2h)/t + L_s·2h + [first] ⌈V/t⌉·h + [last] (⌈V/t⌉·h + h): the matmul weights of a
    layer are split over TP, its two RMSNorm weights are replicated on every TP rank, the
    embedding and lm_head are vocab-parallel (⌈V/t⌉ rows each: a vocabulary t does not divide is
    padded, as vLLM pads it), the final norm is replicated. A tied lm_head is the embedding itself:
    counted once when stage 0 is also the last stage."""
    t, h, layers = layout.tp, shape.hidden, layout.layer_split[stage]
    n = layers * (shape.layer_params() - 2 * h) // t + layers * 2 * h
    first, last = stage == 0, stage == layout.pp - 1
    if first:
        n += shape.vocab_shard(t) * h
    if last:
        n += h
        if not (shape.tie_embeddings and first):
            n += shape.vocab_shard(t) * h
    return n


def stage_holds(layout: Layout, stage: int) -> tuple[str, ...]:
    out = ["embedding"] if stage == 0 else []
    return tuple(out + (["final_norm", "lm_head"] if stage == layout.pp - 1 else []))


def kv_bytes_per_token(shape: ModelShape, layout: Layout, stage: int, dtype_bytes: int) -> int:
    """KV-cache bytes one token costs on one TP rank of ``stage``: 2 (K, V) · L_s · (kv_heads/t) ·
    head_dim · d."""
    return (
        2
        * layout.layer_split[stage]
        * (shape.num_kv_heads // layout.tp)
        * shape.head_dim
        * dtype_bytes
    )


DEFAULT_BATCHED_TOKENS = (
    2048  # chunked prefill's token budget per micro-batch when the spec gives none
)


def token_budget(spec) -> int:
    """Tokens one micro-batch may carry (vLLM's max_num_batched_tokens): run.max_num_batched_tokens,
    else DEFAULT_BATCHED_TOKENS, never below run.max_batch (every decode row fits)."""
    return spec.run.max_num_batched_tokens or max(DEFAULT_BATCHED_TOKENS, spec.run.max_batch)


def kv_slot_tokens(seq_len: int, paged: bool) -> int:
    """Positions one KV slot holds: seq_len, rounded up to whole KV_PAGE_TOKENS pages where the
    paged flash kernel runs (a GPU in 16-bit; harness/engines/reference/model/attention.py)."""
    return -(-seq_len // KV_PAGE_TOKENS) * KV_PAGE_TOKENS if paged else seq_len


def workspace_bytes(
    shape: ModelShape, tp: int, last: bool, dtype_bytes: int, rows: int, tokens: int
) -> int:
    """Transient memory of the widest forward: N = tokens (packed, no padding) over ``rows`` rows.

    activations = N · (2h + 3·I/t) · d — the residual stream and the layer input (2h) plus the
    MLP's gate, up and their product (3·I/t), the peak inside a decoder layer (attention's q, k,
    v and output are smaller for Llama; flash/memory-efficient attention is assumed, so no
    width² score matrix). The last stage adds rows · V/t · 4 bytes of fp32 logits (the last
    position of each row, ⌈V/t⌉ padded columns). The KV-cache fraction (< 1) leaves room for what
    this misses (CUDA context, communicator buffers, allocator fragmentation).
    """
    n = tokens
    act = n * (2 * shape.hidden + 3 * shape.intermediate // tp) * dtype_bytes
    return act + (rows * shape.vocab_shard(tp) * LOGIT_BYTES if last else 0)


def epsilon(values: list[float]) -> float:
    """Imbalance ε = max/mean − 1 (0 when perfectly balanced)."""
    mean = sum(values) / len(values)
    return max(values) / mean - 1.0 if mean else 0.0
