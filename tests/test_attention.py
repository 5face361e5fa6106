"""The KV-cache attention against the implementation it replaced (issue #15), on mixed batches.

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


def _paged_reference(
    q, key, value, cu_q, cu_k, max_q, max_k, *, window_size, enable_gqa, seqused_k, block_table
):
    """``varlen_attn``'s documented semantics, in plain torch (flash attention does not run on a
    CPU): row b's keys are pages ``block_table[b]`` of the pool, the first ``seqused_k[b]`` of them
    used; causal aligned to the bottom right; KV head j // rep serves query head j."""
    assert window_size == (-1, 0) and enable_gqa and key.shape[1] % 256 == 0
    assert cu_q.dtype == cu_k.dtype == seqused_k.dtype == block_table.dtype == torch.int32
    assert int(cu_k[-1]) == int(seqused_k.sum()) and max_k == int(seqused_k.max())
    out = torch.empty_like(q)
    page = key.shape[1]
    for b in range(len(seqused_k)):
        s0, s1, n_k = int(cu_q[b]), int(cu_q[b + 1]), int(seqused_k[b])
        pages = block_table[b, : -(-n_k // page)].long()
        k = key[pages].reshape(-1, *key.shape[2:])[:n_k].transpose(0, 1)  # [kv_heads, n_k, d]
        v = value[pages].reshape(-1, *value.shape[2:])[:n_k].transpose(0, 1)
        n_q = s1 - s0
        mask = torch.arange(n_k)[None, :] <= (n_k - n_q + torch.arange(n_q))[:, None]
        o = F.scaled_dot_product_attention(
            q[s0:s1].transpose(0, 1)[None], k[None], v[None], attn_mask=mask, enable_gqa=True
        )
        out[s0:s1] = o[0].transpose(0, 1)
    return out


def _tiny_gqa4(tiny, paged, monkeypatch):
    from harness.engines.reference.model import llama

    monkeypatch.setattr(llama, "paged_kernel_applies", lambda *a: paged)
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
    model.allocate_kv(SLOTS, MAX_SEQ)
    return model


def test_paged_index_gives_the_rows_result(tiny, monkeypatch):
    """The paged path's index (block table over a page-padded cache, cu_seq, seqused_k) read with
    the kernel's documented semantics gives what the rows kernel gives, step after step."""
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", _paged_reference)
    paged = _tiny_gqa4(tiny, True, monkeypatch)
    rows = _tiny_gqa4(tiny, False, monkeypatch)
    assert paged.slot_len == 256 and rows.slot_len == MAX_SEQ
    assert next(iter(paged.model.layers.values())).self_attn.k_cache.shape == (SLOTS, 256, 2, 8)
    for step_rows, slots, start in _steps():
        ids, n = _padded(step_rows), _t([len(r) for r in step_rows])
        got = paged.forward_all_logits(ids, _t(slots), _t(start), n)
        want = rows.forward_all_logits(ids, _t(slots), _t(start), n)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    assert paged.paged  # the paged path ran throughout


def test_paged_kernel_failure_falls_back_to_rows(tiny, monkeypatch, capsys):
    """Flash attention does not run on a CPU: a paged model there falls back, with one line, to
    the rows kernel, and computes the same logits."""
    paged = _tiny_gqa4(tiny, True, monkeypatch)
    rows = _tiny_gqa4(tiny, False, monkeypatch)
    step_rows, slots, start = _steps()[0]
    ids, n = _padded(step_rows), _t([len(r) for r in step_rows])
    got = paged.forward_all_logits(ids, _t(slots), _t(start), n)
    torch.testing.assert_close(
        got, rows.forward_all_logits(ids, _t(slots), _t(start), n), atol=2e-5, rtol=1e-5
    )
    assert not paged.paged
    assert capsys.readouterr().err.count("paged flash attention unavailable") == 1


def test_decode_reads_the_cache_in_place_with_no_mask(tiny, monkeypatch):
    """A decode-only step: every key and value tensor attention gets is a view of the layer's own
    cache (no gather copy), with the KV heads as they are stored (no repeat to the query heads:
    the grouped query heads ride the query axis) and no mask."""
    from harness.engines.reference.model import attention

    model = _tiny_gqa4(tiny, False, monkeypatch)
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

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    model(_t([[9], [10], [11]]), _t([0, 3, 5]), _t([9, 8, 4]), _t([1, 1, 1]))
    assert len(seen) == 3 * 3  # 3 rows x 3 layers
    for q_shape, k_shape, k_ptr, v_ptr, mask, causal, gqa in seen:
        assert k_ptr in caches and v_ptr in caches
        # [1, kv_heads, rep, d] against [1, kv_heads, L, d]
        assert q_shape[1:3] == (2, 4) and k_shape[1] == 2
        assert mask is None and not causal and not gqa
