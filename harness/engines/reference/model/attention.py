"""Attention over the slot-indexed KV cache, reading every row's keys and values where they lie.

Tokens travel packed: a micro-batch of B rows is ``N = Σ n_b`` tokens, row b's ``n_b`` tokens
at positions ``start_b .. start_b + n_b − 1`` of KV slot ``slot_b``, contiguous in the packed
order (no padding is computed). ``BatchIndex`` holds that description once per step.

Cache layout, per layer: K and V of ``[num_slots, slot_tokens, kv_heads, head_dim]``, token-major
inside a slot (the layout of a paged flash-attention pool whose pages are ``KV_PAGE_TOKENS``
consecutive positions of one slot). A slot holds ``max_seq_len`` positions, rounded up to whole
pages where the planner counts pages (``harness.plan.planner.slot_tokens``: a GPU in 16-bit); the
runtime allocates exactly the planner's slot length. Only new tokens are written, at their own
(slot, position).

Four kernels, one result (causal attention of each token over its row's cached prefix), chosen by
``choose_kernel`` from the device, the dtype and what the installed torch's
``torch.nn.attention.varlen.varlen_attn`` accepts (its signature, not only that it imports); the
kernels themselves: ``attention_kernels.py``.

- ``paged``: CUDA, 16-bit, a ``varlen_attn`` that takes ``block_table``, ``seqused_k`` and
  ``enable_gqa`` (torch >= 2.12): flash attention over the cache as a page pool, one launch per
  layer, nothing copied.
- ``varlen``: CUDA, 16-bit, a ``varlen_attn`` without paging (torch 2.10: ``is_causal``; 2.11:
  ``window_size``): each row's keys and values gathered packed, then one flash call (3 launches).
- ``batched``: CUDA otherwise (fp32, torch < 2.10, a head size flash does not take): at most two
  groups of rows (decode, prefill), each a few gathers and one SDPA, whatever the batch size.
- ``rows``: CPU: one SDPA per row over views of its slot (no copy).

A kernel that raises (``RuntimeError``, ``TypeError``, ``ValueError``, ``NotImplementedError``)
hands the step to the next one in ``FALLBACK`` with one line on stderr; the model stays on it
(``StageModel.kernel``) and never tries the failed one again, not even at the next
``allocate_kv``.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from harness.engines.reference.model import attention_kernels as kernels
from harness.engines.reference.model.attention_kernels import flash_takes, varlen_params
from harness.plan.memory import KV_PAGE_TOKENS, kv_slot_tokens

FALLBACK = {"paged": "varlen", "varlen": "batched", "batched": None, "rows": None}
_PAGED_ARGS = frozenset({"block_table", "seqused_k", "enable_gqa", "window_size"})
_CAUSAL_ARGS = ("window_size", "is_causal")  # torch 2.11 / torch 2.10 spell causality so


def choose_kernel(
    device: torch.device,
    dtype: torch.dtype,
    head_dim: int,
    slot_len: int | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> str:
    """The kernel for this device, dtype and torch (see the module docstring); ``slot_len``: the
    allocated slot length (``paged`` needs whole pages); ``exclude``: kernels that already failed
    here."""
    if device.type != "cuda":
        return "rows"
    params = varlen_params() if flash_takes(dtype, head_dim) else None
    pages_fit = slot_len is None or slot_len % KV_PAGE_TOKENS == 0
    if params is not None and _PAGED_ARGS <= params and pages_fit and "paged" not in exclude:
        return "paged"
    if params is not None and any(a in params for a in _CAUSAL_ARGS) and "varlen" not in exclude:
        return "varlen"
    return "batched"


def slot_tokens(max_seq_len: int, paged: bool) -> int:
    """Positions one slot holds: ``max_seq_len``, rounded up to whole pages when paged (the
    planner's ``kv_slot_tokens``, so plan and allocation agree)."""
    return kv_slot_tokens(max_seq_len, paged)


class _Group:
    """Rows one ``batched`` SDPA call serves, padded to the group's longest query and key span:
    ``q_index [G, T]`` packed token of (row, t) (past a row's end: its last token again),
    ``valid_at`` flat (row, t) of each real token, ``key_index [G, L]`` flat cache position
    (slot · slot_len + j), ``mask [G, 1, T, L]`` (key j visible to query t iff ``j <= start +
    t``), ``out_index`` the packed index of each real token, in the order of ``valid_at``."""

    def __init__(self, rows, slots, start_pos, n_tokens, offsets, slot_len, t_max, l_max, valid):
        dev = slots.device
        idx = torch.tensor(rows, dtype=torch.long, device=dev)
        n, s, off = n_tokens[idx], start_pos[idx], offsets[idx]
        t = torch.minimum(torch.arange(t_max, device=dev)[None, :], n[:, None] - 1)
        self.q_index = off[:, None] + t
        j = torch.arange(l_max, device=dev)
        self.key_index = slots[idx][:, None] * slot_len + j[None, :]
        self.mask = (j[None, None, :] <= (s[:, None] + t)[:, :, None])[:, None]
        # (row, t) of each real token, flat in [G·T], built with its size known (``valid``: the
        # group's tokens, from the host's ints) so that neither here nor in a layer does a
        # boolean index make the host wait for the device
        g = torch.repeat_interleave(torch.arange(len(rows), device=dev), n, output_size=valid)
        first = torch.cumsum(n, 0) - n
        self.valid_at = g * t_max + torch.arange(valid, device=dev) - first[g]
        self.out_index = self.q_index.reshape(-1)[self.valid_at]
        self._rep: dict[int, torch.Tensor] = {}

    def mask_for(self, rep: int) -> torch.Tensor:
        """The mask for queries laid out ``[G, kv_heads, rep·T, d]`` (query head r of a KV head at
        rows r·T .. r·T + T − 1), built once per step and shared by every layer."""
        t = self.mask.shape[2]
        if t == 1 or rep == 1:
            return self.mask
        if rep not in self._rep:
            g, _, _, span = self.mask.shape
            self._rep[rep] = self.mask.expand(g, rep, t, span).reshape(g, 1, rep * t, span)
        return self._rep[rep]


class BatchIndex:
    """Where a micro-batch's packed tokens live. Built once per step, shared by every layer.
    ``host``: the rows' (slots, starts, lengths) as Python ints when the caller has them (the
    serving path: then building the index reads nothing from the device); without it they are
    read from the tensors (one host sync).

    ``width`` (optional): the inputs came padded as ``[B, width, ...]``; ``pack``/``unpack``
    convert. ``kernel``: which attention kernel reads it (its index tensors are built here, and
    again by ``fall_back`` for the next kernel). ``slot_len``: positions per allocated slot."""

    def __init__(
        self,
        slots: torch.Tensor,
        start_pos: torch.Tensor,
        n_tokens: torch.Tensor,
        max_seq_len: int,
        *,
        width: int | None = None,
        kernel: str = "rows",
        slot_len: int | None = None,
        host: tuple[list[int], list[int], list[int]] | None = None,
    ):
        device = slots.device
        self.slots, self.start_pos, self.n_tokens = slots, start_pos, n_tokens
        if host is None:
            host = (slots.tolist(), start_pos.tolist(), n_tokens.tolist())
        slot_l, start_l, n_l = host
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
        self.slot_len = slot_len or max_seq_len
        b = len(n_l)
        if self.max_q == 1:  # decode only: one token per row
            self.positions, self.token_slots = start_pos, slots
            self.last = torch.arange(b, device=device)
            row_of = self.last
            within = torch.zeros(b, dtype=torch.long, device=device)
            self._off = row_of
        else:
            # the offsets from the device's own lengths: no upload of the host's
            self._off = off = torch.cumsum(n_tokens, 0) - n_tokens
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
        self.kernel = kernel
        self.failed: list[str] = []  # kernels that raised on this step, in order
        self._prepare()

    def _prepare(self) -> None:
        if self.kernel == "paged":
            self._index_paged()
        elif self.kernel == "varlen":
            self._index_varlen()
        elif self.kernel == "batched":
            self._index_batched()

    def fall_back(self) -> str | None:
        """Move to the next kernel in ``FALLBACK`` (building its index); None when none is left."""
        nxt = FALLBACK[self.kernel]
        if nxt is not None:
            self.failed.append(self.kernel)
            self.kernel = nxt
            self._prepare()
        return nxt

    def _cu(self) -> None:
        lens = (self.start_pos + self.n_tokens).to(torch.int32)
        self.seqused_k = lens
        self.cu_q = F.pad(self.n_tokens.cumsum(0), (1, 0)).to(torch.int32)
        self.cu_k = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))

    def _index_paged(self) -> None:
        self._cu()
        if self.slot_len % KV_PAGE_TOKENS:
            raise ValueError(f"paged attention needs whole pages; slot_len={self.slot_len}")
        pages = math.ceil(self.span / KV_PAGE_TOKENS)
        per_slot = self.slot_len // KV_PAGE_TOKENS
        dev = self.slots.device
        self.block_table = (
            (self.slots[:, None] * per_slot + torch.arange(pages, device=dev)[None, :])
            .to(torch.int32)
            .contiguous()
        )

    def _index_varlen(self) -> None:
        """Each row's keys 0 .. start + n − 1, packed in row order, as flat cache positions."""
        self._cu()
        dev = self.slots.device
        lens = self.start_pos + self.n_tokens
        total = sum(s + n for _, s, n, _ in self.rows)
        row_of = torch.repeat_interleave(
            torch.arange(self.batch, device=dev), lens, output_size=total
        )
        within = torch.arange(total, device=dev) - self.cu_k[:-1].long()[row_of]
        self.key_index = self.slots[row_of] * self.slot_len + within

    def _index_batched(self) -> None:
        """At most two groups, so padding stays small: decode rows (one query each) and prefill
        rows (padded to the longest prompt chunk among them)."""
        self.groups = []
        for want_decode in (True, False):
            rows = [i for i, (_, _, n, _) in enumerate(self.rows) if (n == 1) == want_decode]
            if rows:
                t_max = max(self.rows[i][2] for i in rows)
                l_max = max(self.rows[i][1] + self.rows[i][2] for i in rows)
                valid = sum(self.rows[i][2] for i in rows)
                self.groups.append(
                    _Group(
                        rows,
                        self.slots,
                        self.start_pos,
                        self.n_tokens,
                        self._off,
                        self.slot_len,
                        t_max,
                        l_max,
                        valid,
                    )
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


_KERNELS = {
    "paged": kernels.paged,
    "varlen": kernels.varlen,
    "batched": kernels.batched,
    "rows": kernels.rows,
}
_DEGRADE = (RuntimeError, TypeError, ValueError, NotImplementedError)


def attend(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: BatchIndex
) -> torch.Tensor:
    """Causal attention of the packed queries ``[N, q_heads, d]`` over their rows' cached keys
    (which already hold this step's tokens); -> ``[N, q_heads, d]``."""
    while True:
        kernel = batch.kernel
        try:
            return _KERNELS[kernel](q, k_cache, v_cache, batch)
        except _DEGRADE as e:  # degrade, never crash: the next kernel computes the same thing
            if FALLBACK[kernel] is None:
                raise
            nxt = batch.fall_back()
            sys.stderr.write(
                f"harness: {kernel} attention unavailable ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''}); using the {nxt} kernel\n"
            )
