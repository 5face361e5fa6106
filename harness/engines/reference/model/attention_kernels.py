"""The four attention kernels behind ``attention.attend``; each takes the packed queries
``[N, q_heads, d]``, a layer's K and V cache ``[slots, slot_len, kv_heads, d]`` (this step's tokens
already written) and the step's ``BatchIndex``, and returns ``[N, q_heads, d]``: causal attention
of row b's token t over its slot's positions ``0 .. start_b + t``, query head j reading KV head
``j // rep`` (``rep = q_heads / kv_heads``, the grouping of Hugging Face's ``repeat_kv``).
Which torch gets which kernel: ``attention`` module docstring and docs/performance.md."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from harness.plan.memory import KV_PAGE_TOKENS


def varlen_params() -> frozenset[str] | None:
    """The parameter names of this torch's ``varlen_attn``, or None when it has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    try:
        return frozenset(inspect.signature(varlen_attn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: treat as absent
        return None


def flash_takes(dtype: torch.dtype, head_dim: int) -> bool:
    """Flash attention's own limits: fp16/bf16, a head size that is a multiple of 8, at most 256."""
    return dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256


def paged(q, k_cache, v_cache, batch) -> torch.Tensor:
    """Flash attention over the cache as a page pool (``block_table[b]`` lists slot b's pages,
    ``seqused_k[b] = start_b + n_b`` keys used, causal aligned to the bottom right, grouped KV heads
    in the kernel): one launch, nothing copied. Needs a ``varlen_attn`` that takes ``block_table``
    (torch >= 2.12)."""
    from torch.nn.attention.varlen import varlen_attn

    pool = (-1, KV_PAGE_TOKENS, *k_cache.shape[2:])  # [pages, page, kv_heads, d]: a view
    return varlen_attn(
        q,
        k_cache.view(pool),
        v_cache.view(pool),
        batch.cu_q,
        batch.cu_k,
        batch.max_q,
        batch.span,
        window_size=(-1, 0),
        enable_gqa=True,
        seqused_k=batch.seqused_k,
        block_table=batch.block_table,
    )


def varlen(q, k_cache, v_cache, batch) -> torch.Tensor:
    """Flash attention on keys and values gathered packed (``[Σ_b (start_b + n_b), kv_heads, d]``,
    one ``index_select`` each), for a ``varlen_attn`` without paging (torch 2.10: causal through
    ``is_causal``; 2.11: ``window_size=(-1, 0)``, the tuple it compares against). Flash attention's
    causal mask is aligned to the bottom right when a row has more keys than queries, and its
    varlen kernel serves grouped KV heads (query heads a multiple of KV heads) as they are. The
    gather costs one extra read and write of the keys the step attends to."""
    from torch.nn.attention.varlen import varlen_attn

    n_kv, d = k_cache.shape[2], k_cache.shape[3]
    keys = k_cache.view(-1, n_kv, d).index_select(0, batch.key_index)
    vals = v_cache.view(-1, n_kv, d).index_select(0, batch.key_index)
    params = varlen_params() or frozenset()
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn(q, keys, vals, batch.cu_q, batch.cu_k, batch.max_q, batch.span, **causal)


def batched(q, k_cache, v_cache, batch) -> torch.Tensor:
    """No flash kernel: one ``scaled_dot_product_attention`` per group of rows (decode rows,
    prefill rows; ``BatchIndex._index_batched``), whatever the batch size. Keys and values are
    gathered ``[G, kv_heads, L, d]`` (L the group's longest span), the ``rep`` query heads of a
    KV head ride the query axis (``[G, kv_heads, rep·T, d]``: no head repetition of K and V, no
    ``enable_gqa``, so any SDPA backend that takes a boolean mask serves it), and a mask hides
    the keys past each query's position. Padded query rows repeat their row's last token and are
    dropped."""
    n_kv, d = k_cache.shape[2], k_cache.shape[3]
    rep = q.shape[1] // n_kv
    flat_k, flat_v = k_cache.view(-1, n_kv, d), v_cache.view(-1, n_kv, d)
    out = torch.empty_like(q)
    for g in batch.groups:
        rows, t = g.q_index.shape
        qg = q[g.q_index].view(rows, t, n_kv, rep, d).permute(0, 2, 3, 1, 4)
        qg = qg.reshape(rows, n_kv, rep * t, d)
        keys = flat_k[g.key_index].transpose(1, 2)  # [G, kv_heads, L, d]
        vals = flat_v[g.key_index].transpose(1, 2)
        o = F.scaled_dot_product_attention(qg, keys, vals, attn_mask=g.mask_for(rep))
        o = o.view(rows, n_kv, rep, t, d).permute(0, 3, 1, 2, 4).reshape(rows, t, n_kv * rep, d)
        out[g.out_index] = o.reshape(rows * t, n_kv * rep, d)[g.valid_at]
    return out


def rows(q, k_cache, v_cache, batch) -> torch.Tensor:
    """One fused SDPA per row over views of its slot (the CPU kernel: no copy of the cache). A
    decode row (n = 1) puts the ``rep`` query heads of each KV head on the query axis
    (``[kv_heads, rep, d]`` against ``[kv_heads, L, d]``): no mask, no head repetition; a prefill
    row uses ``enable_gqa`` and is causal (from position 0) or has an ``[n, L]`` mask (a chunk on
    top of a cache)."""
    n_q, d = q.shape[1], q.shape[2]
    n_kv = k_cache.shape[2]
    rep = n_q // n_kv
    out = torch.empty_like(q)
    for slot, start, n, off in batch.rows:
        span = start + n
        keys = k_cache[slot, :span].transpose(0, 1)[None]  # [1, kv_heads, span, d], a view
        vals = v_cache[slot, :span].transpose(0, 1)[None]
        if n == 1:  # query head j uses KV head j // rep: group the rep heads on the query axis
            o = F.scaled_dot_product_attention(q[off].view(1, n_kv, rep, d), keys, vals)
            out[off] = o.view(n_q, d)
            continue
        qr = q[off : off + n].transpose(0, 1)[None]  # [1, q_heads, n, d]
        if start == 0:
            o = F.scaled_dot_product_attention(qr, keys, vals, is_causal=True, enable_gqa=True)
        else:  # a chunk on top of a cache: token t sees positions <= start + t
            mask = (
                torch.arange(span, device=q.device)[None, :]
                <= (start + torch.arange(n, device=q.device))[:, None]
            )
            o = F.scaled_dot_product_attention(qr, keys, vals, attn_mask=mask, enable_gqa=True)
        out[off : off + n] = o[0].transpose(0, 1)
    return out
