"""The KV-cache attention against the implementation it replaced (issue #15), on mixed batches;
every kernel (paged, varlen, batched, rows: model/attention.py) against the rows kernel, with
``varlen_attn`` stubbed as each torch version spells it (flash attention does not run on a CPU),
and the kernel choice against the planner's paged decision.

``reference_stage`` is the old algorithm, kept only here as the reference: each row's whole KV
span gathered out of a ``[slots, kv_heads, max_seq, head_dim]`` cache, ``repeat_interleave``d to
the query heads and attended with a dense ``[B, 1, T, span]`` mask. Its cache is its own, so the
model under test and the reference share only the weights. Both see the same sequence of steps:
fresh prefills, a chunked prefill on top of a cache, decode rows beside them, rows in any slot
order, decode-only batches whose rows have very different contexts. Two shapes: the tiny preset
(4 query heads over 2 KV heads) and one with 4 query heads per KV head.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import torch.nn.functional as F

from harness.engines.reference.comm import single_process_comm
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.llama import rope_cos_sin
from harness.engines.reference.model.weights import SeededWeights
from harness.spec.layout import Layout

L = torch.long
SLOTS, MAX_SEQ = 6, 40


def _rotate(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class ReferenceStage:
    """The pre-#15 attention over its own head-major cache, with the model's other modules."""

    def __init__(self, model):
        self.m = model
        first = next(iter(model.model.layers.values())).self_attn
        kv_heads = first.k_proj.weight.shape[0] // first.head_dim
        self.d = first.head_dim
        self.cache = {
            i: (
                torch.zeros(SLOTS, kv_heads, MAX_SEQ, self.d),
                torch.zeros(SLOTS, kv_heads, MAX_SEQ, self.d),
            )
            for i in model.model.layers
        }

    @torch.no_grad()
    def all_logits(self, ids, slots, start, n):
        B, T = ids.shape
        d = self.d
        t = torch.arange(T)
        pos = start[:, None] + t[None, :]
        w_row, w_col = (t[None, :] < n[:, None]).nonzero(as_tuple=True)
        span = int((start + n).max())
        mask = (torch.arange(span)[None, None, :] <= pos[:, :, None])[:, None]
        h = self.m._embed(ids)
        cos, sin = rope_cos_sin(self.m.inv_freq, pos, h.dtype)
        c, s = cos[:, :, None, :], sin[:, :, None, :]
        for i, layer in self.m.model.layers.items():
            a, (kc, vc) = layer.self_attn, self.cache[i]
            x = layer.input_layernorm(h)
            q = a.q_proj(x).view(B, T, -1, d)
            k = a.k_proj(x).view(B, T, -1, d)
            v = a.v_proj(x).view(B, T, -1, d)
            q, k = q * c + _rotate(q) * s, k * c + _rotate(k) * s
            kc[slots[w_row], :, pos[w_row, w_col]] = k[w_row, w_col]
            vc[slots[w_row], :, pos[w_row, w_col]] = v[w_row, w_col]
            keys, vals = kc[slots, :, :span], vc[slots, :, :span]
            rep = q.shape[2] // keys.shape[1]
            keys, vals = keys.repeat_interleave(rep, dim=1), vals.repeat_interleave(rep, dim=1)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=mask)
            h = h + a.o_proj(out.transpose(1, 2).reshape(B, T, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.m._logits(h)


def _padded(rows):
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=L)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids


def _t(xs):
    return torch.tensor(xs, dtype=L)


def _steps():
    """(rows of token ids, slots, start positions) of each step; every row's tokens are new."""
    a = [5, 6, 7, 8, 9, 10]
    b = [100, 101, 102, 103, 104, 105, 106, 107]
    c = [42, 43, 44]
    d = [(i * 29) % 256 for i in range(30)]
    return [
        ([a, b[:5]], [3, 0], [0, 0]),  # prefill, prefill chunk 1 of b
        ([[61], c, b[5:]], [3, 5, 0], [6, 0, 5]),  # mixed: decode, prefill, chunk 2 of b
        ([[7], [62], [8]], [0, 3, 5], [8, 7, 3]),  # decode only, another row order
        ([d[:17], [9]], [1, 5], [0, 4]),  # long prefill beside a decode row
        ([d[17:], [63], [11]], [1, 3, 0], [17, 8, 9]),  # chunk of d on 17 cached + 2 decodes
        ([[1], [2], [3], [4]], [5, 0, 1, 3], [5, 10, 30, 9]),  # decode: contexts 5, 10, 30 and 9
    ]


SHAPES = {
    "tiny": {},
    "gqa4": dict(hidden=64, num_heads=8, num_kv_heads=2, head_dim=8, num_layers=3),
}


@pytest.mark.parametrize("which", sorted(SHAPES))
def test_attention_equals_the_gather_implementation_on_mixed_batches(tiny, which):
    shape = dataclasses.replace(tiny, name=which, **SHAPES[which])
    lay = Layout(1, 1, 1, (shape.num_layers,))
    model = build_stage(
        shape,
        lay,
        lay.place(0),
        single_process_comm(),
        dtype=torch.float32,
        device=torch.device("cpu"),
        weights=SeededWeights(3),
    )
    model.allocate_kv(SLOTS, MAX_SEQ)
    ref = ReferenceStage(model)
    for rows, slots, start in _steps():
        ids, n = _padded(rows), _t([len(r) for r in rows])
        got = model.forward_all_logits(ids, _t(slots), _t(start), n)
        want = ref.all_logits(ids, _t(slots), _t(start), n)
        for i, r in enumerate(rows):
            torch.testing.assert_close(got[i, : len(r)], want[i, : len(r)], atol=2e-5, rtol=1e-5)
        assert got.abs().max() > 0.01  # real logits, not zeros on both sides


def _flash_semantics(q, k, v, cu_q, cu_k, max_q, max_k, causal: bool) -> torch.Tensor:
    """What flash attention's varlen kernel computes, in plain torch: sequence b is queries
    ``cu_q[b]:cu_q[b+1]`` over keys ``cu_k[b]:cu_k[b+1]``; causal is aligned to the bottom right
    (query t of n sees keys <= L − n + t); KV head j // rep serves query head j."""
    assert cu_q.dtype == cu_k.dtype == torch.int32
    assert q.shape[1] % k.shape[1] == 0 and k.shape[0] == int(cu_k[-1])
    out = torch.empty_like(q)
    for b in range(len(cu_q) - 1):
        s0, s1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        n_q, n_k = s1 - s0, k1 - k0
        assert n_q <= max_q and n_k <= max_k
        mask = torch.arange(n_k)[None, :] <= (n_k - n_q + torch.arange(n_q))[:, None]
        o = F.scaled_dot_product_attention(
            q[s0:s1].transpose(0, 1)[None],
            k[k0:k1].transpose(0, 1)[None],
            v[k0:k1].transpose(0, 1)[None],
            attn_mask=mask if causal else None,
            enable_gqa=True,
        )
        out[s0:s1] = o[0].transpose(0, 1)
    return out


CALLS: list[str] = []


# torch 2.10's and 2.11's signatures, exactly (read from their wheels): no enable_gqa, seqused_k or
# block_table; 2.10 spells causality is_causal, 2.11 window_size (and compares it with a tuple).
def varlen_attn_210(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None
):
    CALLS.append("varlen")
    return _flash_semantics(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal)


def varlen_attn_211(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
):
    CALLS.append("varlen")
    causal = window_size == (-1, 0)
    return _flash_semantics(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal)


def varlen_attn_212(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """torch >= 2.12: paged. Row b's keys are pages ``block_table[b]`` of the pool, the first
    ``seqused_k[b]`` of them used."""
    CALLS.append("paged" if block_table is not None else "varlen")
    if block_table is None:
        return _flash_semantics(
            query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, window_size == (-1, 0)
        )
    assert enable_gqa and seqused_k.dtype == block_table.dtype == torch.int32
    assert int(cu_seq_k[-1]) == int(seqused_k.sum()) and max_k == int(seqused_k.max())
    page = key.shape[1]
    ks, vs = [], []
    for b in range(len(seqused_k)):
        n_k = int(seqused_k[b])
        pages = block_table[b, : -(-n_k // page)].long()
        ks.append(key[pages].reshape(-1, *key.shape[2:])[:n_k])
        vs.append(value[pages].reshape(-1, *value.shape[2:])[:n_k])
    return _flash_semantics(
        query, torch.cat(ks), torch.cat(vs), cu_seq_q, cu_seq_k, max_q, max_k, True
    )


STUBS = {"2.10": varlen_attn_210, "2.11": varlen_attn_211, "2.12": varlen_attn_212}
CUDA = torch.device("cuda")  # a device object only: nothing runs on it here


def _stub(monkeypatch, version: str | None) -> None:
    """``torch.nn.attention.varlen`` as torch ``version`` has it (None: a torch without it)."""
    import sys

    import torch.nn.attention.varlen as varlen

    if version is None:
        monkeypatch.setitem(sys.modules, "torch.nn.attention.varlen", None)
    else:
        monkeypatch.setattr(varlen, "varlen_attn", STUBS[version])


def _gqa4(tiny, kernel: str, slot_len: int | None = None):
    """The 4-queries-per-KV-head model on the CPU, its attention forced to ``kernel``."""
    shape = dataclasses.replace(tiny, name="gqa4", **SHAPES["gqa4"])
    lay = Layout(1, 1, 1, (shape.num_layers,))
    model = build_stage(
        shape,
        lay,
        lay.place(0),
        single_process_comm(),
        dtype=torch.float32,
        device=torch.device("cpu"),
        weights=SeededWeights(3),
    )
    model.allocate_kv(SLOTS, MAX_SEQ, slot_len)
    model.kernel = kernel
    return model


def _same_logits_every_step(model, reference) -> None:
    for step_rows, slots, start in _steps():
        ids, n = _padded(step_rows), _t([len(r) for r in step_rows])
        got = model.forward_all_logits(ids, _t(slots), _t(start), n)
        want = reference.forward_all_logits(ids, _t(slots), _t(start), n)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "version, kernel",
    [(None, "batched"), ("2.10", "varlen"), ("2.11", "varlen"), ("2.12", "paged")],
)
def test_kernel_is_chosen_by_the_varlen_signature_not_the_import(monkeypatch, version, kernel):
    """torch 2.10 and 2.11 have ``varlen_attn`` but none of the paged arguments: they get the
    varlen kernel, never the paged one (issue 26: every CUDA bf16 forward raised TypeError);
    a torch without it gets the batched kernel. fp32, a head size flash does not take and the
    CPU never get a flash kernel; paged needs slots of whole pages."""
    _stub(monkeypatch, version)
    from harness.engines.reference.model.attention import choose_kernel

    assert choose_kernel(CUDA, torch.bfloat16, 128, 512) == kernel
    assert choose_kernel(CUDA, torch.float16, 64, None) == kernel
    assert choose_kernel(CUDA, torch.bfloat16, 128, 300) == ("varlen" if version else "batched")
    assert choose_kernel(CUDA, torch.float32, 128, 512) == "batched"
    assert choose_kernel(CUDA, torch.bfloat16, 12, 512) == "batched"
    assert choose_kernel(torch.device("cpu"), torch.bfloat16, 128, 512) == "rows"
    if version:  # a kernel that failed here is never chosen again
        assert choose_kernel(CUDA, torch.bfloat16, 128, 512, {"paged", "varlen"}) == "batched"


def test_installed_torch_gets_the_kernel_docs_performance_names():
    """The table in docs/performance.md, for the torch this runs under (2.13 here; 2.11 in the
    torch-2.11 venv of issue 26)."""
    from harness.engines.reference.model.attention import choose_kernel

    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    want = "paged" if version >= (2, 12) else "varlen" if version >= (2, 10) else "batched"
    assert choose_kernel(CUDA, torch.bfloat16, 128, 512) == want


@pytest.mark.parametrize("version", ["2.10", "2.11"])
def test_varlen_kernel_with_the_real_signature_equals_rows(tiny, monkeypatch, version):
    """``varlen_attn`` stubbed with torch 2.10's / 2.11's own signature (an argument it does not
    take raises TypeError, as the real one does) and flash attention's semantics: the varlen kernel
    gives the rows kernel's logits over prefills, chunks on a cache and decode rows, with one
    ``varlen_attn`` call per layer per step and no fall-back."""
    _stub(monkeypatch, version)
    model, rows = _gqa4(tiny, "varlen"), _gqa4(tiny, "rows")
    CALLS.clear()
    _same_logits_every_step(model, rows)
    assert CALLS == ["varlen"] * (len(_steps()) * model.shape.num_layers)
    assert model.kernel == "varlen" and not model.failed_kernels


def test_paged_kernel_with_the_paged_signature_equals_rows(tiny, monkeypatch):
    """The paged index (block table over a page-padded cache, cu_seq, seqused_k) read with the
    kernel's semantics gives the rows kernel's logits, one call per layer, step after step."""
    _stub(monkeypatch, "2.12")
    paged, rows = _gqa4(tiny, "paged", 256), _gqa4(tiny, "rows")
    assert paged.slot_len == 256 and rows.slot_len == MAX_SEQ
    assert next(iter(paged.model.layers.values())).self_attn.k_cache.shape == (SLOTS, 256, 2, 8)
    CALLS.clear()
    _same_logits_every_step(paged, rows)
    assert CALLS == ["paged"] * (len(_steps()) * paged.shape.num_layers)
    assert paged.paged


def test_batched_kernel_equals_rows_in_a_fixed_number_of_launches(tiny, monkeypatch):
    """The kernel a CUDA torch without flash varlen gets (and fp32 on CUDA): the rows kernel's
    logits, with at most two SDPA calls per layer (decode rows, prefill rows) whatever the number
    of rows: no Python loop over rows."""
    from harness.engines.reference.model import attention_kernels

    model, rows = _gqa4(tiny, "batched"), _gqa4(tiny, "rows")
    _same_logits_every_step(model, rows)
    calls, real = [], F.scaled_dot_product_attention
    monkeypatch.setattr(
        attention_kernels.F,
        "scaled_dot_product_attention",
        lambda *a, **kw: (calls.append(1), real(*a, **kw))[1],
    )
    layers = model.shape.num_layers
    for b in (2, 6):  # decode only: one call per layer, for 2 rows as for 6
        calls.clear()
        model(_t([[7]] * b), _t(list(range(b))), _t([20] * b), _t([1] * b))
        assert len(calls) == layers
    calls.clear()  # 2 prefill chunks and 3 decode rows: two calls per layer
    model(
        _padded([[1, 2, 3], [4], [5], [6, 7], [8]]),
        _t([0, 1, 2, 3, 4]),
        _t([30, 21, 21, 0, 21]),
        _t([3, 1, 1, 2, 1]),
    )
    assert len(calls) == 2 * layers


def test_failed_kernels_fall_back_once_and_are_not_retried(tiny, monkeypatch, capsys):
    """Flash attention does not run on a CPU: a model that (as on a CUDA bf16 device with torch
    >= 2.12) chose the paged kernel falls back step by step to one that runs, one stderr line per
    failed kernel, computes the rows kernel's logits, and a later ``allocate_kv`` (emulate calls
    it per point) does not try the failed kernels again."""
    import torch.nn.attention.varlen as varlen

    from harness.engines.reference.model import attention, llama

    def no_cpu_kernel(*a, **kw):  # what flash attention does on a CPU
        raise NotImplementedError("Could not run 'aten::_flash_attention_forward' on 'CPU'")

    no_cpu_kernel.__signature__ = inspect.signature(varlen_attn_212)
    monkeypatch.setattr(varlen, "varlen_attn", no_cpu_kernel)
    monkeypatch.setattr(
        llama,
        "choose_kernel",
        lambda dev, dtype, hd, slot, exclude: attention.choose_kernel(
            CUDA, torch.bfloat16, hd, slot, exclude
        ),
    )
    model, rows = _gqa4(tiny, "paged", 256), _gqa4(tiny, "rows")
    model.allocate_kv(SLOTS, MAX_SEQ, 256)
    assert model.kernel == "paged"
    _same_logits_every_step(model, rows)
    assert model.kernel == "batched" and model.failed_kernels == {"paged", "varlen"}
    err = capsys.readouterr().err
    assert err.count("paged attention unavailable") == 1
    assert err.count("varlen attention unavailable") == 1
    model.allocate_kv(SLOTS, MAX_SEQ, 256)
    assert model.kernel == "batched"
    _same_logits_every_step(model, rows)
    assert "unavailable" not in capsys.readouterr().err


def test_decode_reads_the_cache_in_place_with_no_mask(tiny, monkeypatch):
    """A decode-only step on the CPU (rows kernel): every key and value tensor attention gets is a
    view of the layer's own cache (no gather copy), with the KV heads as they are stored (no
    repeat to the query heads: the grouped query heads ride the query axis) and no mask."""
    from harness.engines.reference.model import attention_kernels

    model = _gqa4(tiny, "rows")
    for rows, slots, start in _steps()[:3]:  # fill some cache first
        model.forward_all_logits(_padded(rows), _t(slots), _t(start), _t([len(r) for r in rows]))
    attn = [layer.self_attn for layer in model.model.layers.values()]
    caches = {c.untyped_storage().data_ptr() for a in attn for c in (a.k_cache, a.v_cache)}
    seen, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        seen.append(
            (
                q.shape,
                k.shape,
                k.untyped_storage().data_ptr(),
                v.untyped_storage().data_ptr(),
                attn_mask,
                is_causal,
                kw.get("enable_gqa", False),
            )
        )
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(attention_kernels.F, "scaled_dot_product_attention", spy)
    model(_t([[9], [10], [11]]), _t([0, 3, 5]), _t([9, 8, 4]), _t([1, 1, 1]))
    assert len(seen) == 3 * 3  # 3 rows x 3 layers
    for q_shape, k_shape, k_ptr, v_ptr, mask, causal, gqa in seen:
        assert k_ptr in caches and v_ptr in caches
        # [1, kv_heads, rep, d] against [1, kv_heads, L, d]
        assert q_shape[1:3] == (2, 4) and k_shape[1] == 2
        assert mask is None and not causal and not gqa
