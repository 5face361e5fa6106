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
        self.cache = {i: (torch.zeros(SLOTS, kv_heads, MAX_SEQ, self.d), torch.zeros(SLOTS, kv_heads, MAX_SEQ, self.d))
                      for i in model.model.layers}

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
        ids[i, :len(r)] = torch.tensor(r)
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
        ([a, b[:5]], [3, 0], [0, 0]),                                 # prefill, prefill chunk 1 of b
        ([[61], c, b[5:]], [3, 5, 0], [6, 0, 5]),                     # mixed: decode, prefill, chunk 2 of b
        ([[7], [62], [8]], [0, 3, 5], [8, 7, 3]),                     # decode only, another row order
        ([d[:17], [9]], [1, 5], [0, 4]),                              # long prefill beside a decode row
        ([d[17:], [63], [11]], [1, 3, 0], [17, 8, 9]),                # chunk of d on 17 cached + 2 decodes
        ([[1], [2], [3], [4]], [5, 0, 1, 3], [5, 10, 30, 9]),         # decode: contexts 5, 10, 30 and 9
    ]


SHAPES = {
    "tiny": {},
    "gqa4": dict(hidden=64, num_heads=8, num_kv_heads=2, head_dim=8, num_layers=3),
}


@pytest.mark.parametrize("which", sorted(SHAPES))
def test_attention_equals_the_gather_implementation_on_mixed_batches(tiny, which):
    shape = dataclasses.replace(tiny, name=which, **SHAPES[which])
    lay = Layout(1, 1, 1, (shape.num_layers,))
    model = build_stage(shape, lay, lay.place(0), single_process_comm(), dtype=torch.float32,
                        device=torch.device("cpu"), weights=SeededWeights(3))
    model.allocate_kv(SLOTS, MAX_SEQ)
    ref = ReferenceStage(model)
    for rows, slots, start in _steps():
        ids, n = _padded(rows), _t([len(r) for r in rows])
        got = model.forward_all_logits(ids, _t(slots), _t(start), n)
        want = ref.all_logits(ids, _t(slots), _t(start), n)
        for i, r in enumerate(rows):
            torch.testing.assert_close(got[i, :len(r)], want[i, :len(r)], atol=2e-5, rtol=1e-5)
        assert got.abs().max() > 0.01           # real logits, not zeros on both sides
