"""Attention over the slot-indexed KV cache, reading every row's keys and values where they lie.

Tokens travel packed: a micro-batch of B rows is ``N = Σ n_b`` tokens, row b's ``n_b`` tokens
at positions ``start_b .. start_b + n_b − 1`` of KV slot ``slot_b``, contiguous in the packed
order (no padding is computed). ``BatchIndex`` holds that description once per step.

Cache layout, per layer: K and V of ``[num_slots, slot_tokens, kv_heads, head_dim]``, token-major
inside a slot (the layout of a paged flash-attention pool whose pages are ``KV_PAGE_TOKENS``
consecutive positions of one slot). A slot holds ``max_seq_len`` positions, rounded up to whole
pages where the paged kernel runs (``slot_tokens``). Only new tokens are written, at their own
(slot, position); nothing of the cache is copied to attend.

Two kernels, one result (causal attention of each token over its row's cached prefix):
- ``paged``: CUDA, 16-bit, ``torch.nn.attention.varlen.varlen_attn`` (flash attention) over the
  cache as a page pool: ``block_table[b]`` lists slot b's pages, ``seqused_k[b] = start_b + n_b``
  keys, causal aligned to the bottom right (query t of row b sees keys ``<= start_b + t``),
  grouped-query heads in the kernel (``enable_gqa``). One launch per layer, no host sync.
- ``rows``: everywhere else (CPU, fp32 on CUDA): one fused ``scaled_dot_product_attention``
  per row over views of its slot. A decode row (n = 1) puts the ``rep = q_heads / kv_heads``
  query heads of each KV head on the query axis (``[kv_heads, rep, d]`` against
  ``[kv_heads, L, d]``), so no mask and no head repetition; a prefill row uses ``enable_gqa``
  and is causal (from position 0) or has a ``[n, L]`` mask (a chunk on top of a cache).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from harness.plan.memory import KV_PAGE_TOKENS, kv_slot_tokens


def paged_kernel_applies(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the paged flash kernel serves this device and dtype: CUDA, fp16/bf16, a head size
    flash attention supports (multiple of 8, at most 256), and a torch that has ``varlen_attn``."""
    if (
        device.type != "cuda"
        or dtype not in (torch.float16, torch.bfloat16)
        or head_dim % 8
        or head_dim > 256
    ):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def slot_tokens(max_seq_len: int, paged: bool) -> int:
    """Positions one slot holds: ``max_seq_len``, rounded up to whole pages for the paged kernel
    (the planner's ``kv_slot_tokens``, so plan and allocation agree)."""
    return kv_slot_tokens(max_seq_len, paged)


class BatchIndex:
    """Where a micro-batch's packed tokens live. Built once per step (one host sync: the rows'
    slots, starts and lengths as Python ints), shared by every layer.

    ``width`` (optional): the inputs came padded as ``[B, width, ...]``; ``pack``/``unpack``
    convert. ``paged``: also build the paged kernel's index tensors."""

    def __init__(
        self,
        slots: torch.Tensor,
        start_pos: torch.Tensor,
        n_tokens: torch.Tensor,
        max_seq_len: int,
        *,
        width: int | None = None,
        paged: bool = False,
        slot_len: int | None = None,
    ):
        device = slots.device
        self.slots, self.start_pos, self.n_tokens = slots, start_pos, n_tokens
        slot_l, start_l, n_l = slots.tolist(), start_pos.tolist(), n_tokens.tolist()
        if not n_l or min(n_l) < 1:
            raise ValueError("every row of a batch needs at least one token")
        offsets = [0]
        for n in n_l[:-1]:
            offsets.append(offsets[-1] + n)
        # (slot, start, n, first packed index)
        self.rows = tuple(zip(slot_l, start_l, n_l, offsets))
        self.n_total = offsets[-1] + n_l[-1]
        self.span = max(s + n for s, n in zip(start_l, n_l))  # the longest row's end
        if self.span > max_seq_len:
            raise ValueError(
                f"sequence reaches position {self.span} but the KV cache holds {max_seq_len}"
            )
        self.max_q = max(n_l)
        self.width = width
        b = len(n_l)
        if self.max_q == 1:  # decode only: one token per row
            self.positions, self.token_slots = start_pos, slots
            self.last = torch.arange(b, device=device)
            row_of = self.last
            within = torch.zeros(b, dtype=torch.long, device=device)
        else:
            off = torch.tensor(offsets, dtype=torch.long, device=device)
            row_of = torch.repeat_interleave(
                torch.arange(b, device=device), n_tokens, output_size=self.n_total
            )
            within = torch.arange(self.n_total, device=device) - off[row_of]
            self.positions = start_pos[row_of] + within  # [N]
            self.token_slots = slots[row_of]  # [N]
            self.last = off + n_tokens - 1  # [B]: each row's last packed token
        self._padded_at = (
            None if width is None or self.n_total == b * width else row_of * width + within
        )
        self.paged = paged
        if paged:
            lens = (start_pos + n_tokens).to(torch.int32)
            self.seqused_k = lens
            self.cu_q = F.pad(n_tokens.cumsum(0), (1, 0)).to(torch.int32)
            self.cu_k = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
            pages = math.ceil(self.span / KV_PAGE_TOKENS)
            per_slot = (slot_len or slot_tokens(max_seq_len, True)) // KV_PAGE_TOKENS
            self.block_table = (
                (slots[:, None] * per_slot + torch.arange(pages, device=device)[None, :])
                .to(torch.int32)
                .contiguous()
            )

    @property
    def batch(self) -> int:
        return len(self.rows)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, width, ...]`` padded -> ``[N, ...]`` packed (a view when no row is padded)."""
        flat = x.reshape(-1, *x.shape[2:])
        return flat if self._padded_at is None else flat[self._padded_at]

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` packed -> ``[B, width, ...]`` padded, zeros where a row has no token."""
        if self._padded_at is None:
            return y.view(self.batch, self.width, *y.shape[1:])
        out = y.new_zeros(self.batch * self.width, *y.shape[1:])
        out[self._padded_at] = y
        return out.view(self.batch, self.width, *y.shape[1:])


def write_kv(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: BatchIndex,
) -> None:
    """Each new token's K and V (``[N, kv_heads, d]``) into its own slot and position."""
    k_cache[batch.token_slots, batch.positions] = k
    v_cache[batch.token_slots, batch.positions] = v


def attend(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: BatchIndex
) -> torch.Tensor:
    """Causal attention of the packed queries ``[N, q_heads, d]`` over their rows' cached keys
    (which already hold this step's tokens); -> ``[N, q_heads, d]``."""
    if batch.paged:
        try:
            return _paged(q, k_cache, v_cache, batch)
        except RuntimeError as e:  # degrade, never crash: the rows kernel computes the same thing
            batch.paged = False
            sys.stderr.write(
                f"harness: paged flash attention unavailable ({str(e).splitlines()[0][:160]}); "
                "using one SDPA per row\n"
            )
    return _rows(q, k_cache, v_cache, batch)


def _paged(q, k_cache, v_cache, batch: BatchIndex) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    # [pages, page, kv_heads, d]: a view of the cache
    pool = (-1, KV_PAGE_TOKENS, *k_cache.shape[2:])
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


def _rows(q, k_cache, v_cache, batch: BatchIndex) -> torch.Tensor:
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
