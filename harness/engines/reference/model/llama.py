"""A Llama decoder stage on one device. It knows nothing of tensor or pipeline parallelism.

Parallelism is applied from outside (harness/parallel/tp.py, harness/model/build.py): a stage
holds any contiguous subset of the decoder layers, plus the embedding on the first stage and
the final norm and lm_head on the last; the TP plan changes only the *shapes* of the linear
weights, and every module reads its local head count from its weights, so the same code runs a
full model or one shard of one stage.

Parameter names are those of Hugging Face's ``LlamaForCausalLM`` (``model.embed_tokens.weight``,
``model.layers.{i}.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``):
the layers live in a ``ModuleDict`` keyed by their global index, so checkpoints map 1:1.

KV cache: one preallocated ``[num_slots, local_kv_heads, max_seq_len, head_dim]`` K and V buffer
per layer, indexed by sequence slot, so rows of a batch may belong to any sequence at any
position (prefill, decode or both in one batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UsageError
from harness.spec.catalog import ModelShape
from harness.spec.checkpoint import hf_tensor_shapes as hf_param_shapes  # noqa: F401 (HF names, one place)


def rope_inv_freq(shape: ModelShape, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, fp32 ``[head_dim/2]``.

    Base: ``1 / theta^(2i/d)``. With ``rope_scaling.rope_type == "llama3"`` (Llama 3.1), a
    frequency whose wavelength ``2*pi/f`` exceeds ``original_max_position_embeddings /
    low_freq_factor`` is divided by ``factor``; one shorter than ``... / high_freq_factor`` is
    kept; between the two, it is a linear blend in ``s = (orig_ctx / wavelength - low) / (high - low)``:
    ``(1 - s) * f / factor + s * f``.
    """
    d = shape.head_dim
    inv = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    rs = shape.rope_scaling
    if not rs:
        return inv
    kind = rs.get("rope_type") or rs.get("type")
    if kind == "default":
        return inv
    if kind != "llama3":
        raise UsageError(f"model.rope_scaling.rope_type: {kind!r} is not supported; use llama3 or none")
    try:
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        orig = float(rs["original_max_position_embeddings"])
    except KeyError as e:
        raise UsageError(f"model.rope_scaling.{e.args[0]}: missing; llama3 rope scaling needs factor, "
                         "low_freq_factor, high_freq_factor and original_max_position_embeddings") from None
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > orig / low, inv / factor, inv)
    s = (orig / wavelen - low) / (high - low)
    blended = (1 - s) * scaled / factor + s * scaled
    medium = (wavelen >= orig / high) & (wavelen <= orig / low)
    return torch.where(medium, blended, scaled)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype):
    """cos and sin ``[B, T, head_dim]`` for integer positions ``[B, T]``, computed in fp32 then cast."""
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)``, normalised in fp32, cast back before the weight (as HF)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention over a slot-indexed KV cache. Head counts come from the weights."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        h = shape.hidden
        self.head_dim = shape.head_dim
        self.q_proj = nn.Linear(h, shape.q_dim, bias=False)
        self.k_proj = nn.Linear(h, shape.kv_dim, bias=False)
        self.v_proj = nn.Linear(h, shape.kv_dim, bias=False)
        self.o_proj = nn.Linear(shape.q_dim, h, bias=False)
        self.k_cache: torch.Tensor | None = None   # [slots, local_kv_heads, max_seq_len, head_dim]
        self.v_cache: torch.Tensor | None = None

    @property
    def local_kv_heads(self) -> int:
        return self.k_proj.weight.shape[0] // self.head_dim

    def allocate_kv(self, num_slots: int, max_seq_len: int) -> int:
        w = self.k_proj.weight
        # Zeros, not empty: masked-out cache entries still enter the matmul (0 * NaN = NaN).
        kw = dict(dtype=w.dtype, device=w.device)
        self.k_cache = torch.zeros(num_slots, self.local_kv_heads, max_seq_len, self.head_dim, **kw)
        self.v_cache = torch.zeros_like(self.k_cache)
        return 2 * self.k_cache.numel() * self.k_cache.element_size()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: "BatchIndex") -> torch.Tensor:
        if self.k_cache is None:
            raise RuntimeError("KV cache not allocated: call StageModel.allocate_kv first")
        B, T, _ = x.shape
        d = self.head_dim
        q = self.q_proj(x).view(B, T, -1, d)
        k = self.k_proj(x).view(B, T, -1, d)
        v = self.v_proj(x).view(B, T, -1, d)
        c, s = cos[:, :, None, :], sin[:, :, None, :]
        q = q * c + _rotate_half(q) * s
        k = k * c + _rotate_half(k) * s
        # Only valid tokens enter the cache, at their own positions of their own slot.
        self.k_cache[batch.w_slot, :, batch.w_pos] = k[batch.w_row, batch.w_col]
        self.v_cache[batch.w_slot, :, batch.w_pos] = v[batch.w_row, batch.w_col]
        keys = self.k_cache[batch.slots, :, :batch.span]          # [B, Hkv, L, d]
        vals = self.v_cache[batch.slots, :, :batch.span]
        rep = q.shape[2] // keys.shape[1]
        if rep > 1:   # query head j uses KV head j // rep
            keys = keys.repeat_interleave(rep, dim=1)
            vals = vals.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=batch.mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.hidden, shape.intermediate, bias=False)
        self.up_proj = nn.Linear(shape.hidden, shape.intermediate, bias=False)
        self.down_proj = nn.Linear(shape.intermediate, shape.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.self_attn = Attention(shape)
        self.mlp = MLP(shape)
        self.input_layernorm = RMSNorm(shape.hidden, shape.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(shape.hidden, shape.rms_norm_eps)

    def forward(self, x, cos, sin, batch):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, batch)
        return x + self.mlp(self.post_attention_layernorm(x))


class BatchIndex:
    """Where a padded batch's tokens live: cache write indices, read span and attention mask.

    Row b holds ``n_tokens[b]`` valid tokens at positions ``start_pos[b] + t``. Token t of row b
    may attend to cache positions ``<= start_pos[b] + t`` of slot ``slots[b]`` only. Padded
    tokens (t >= n_tokens[b]) are computed but never written to the cache, and no valid token
    sees them; their outputs are discarded.
    """

    def __init__(self, slots: torch.Tensor, start_pos: torch.Tensor, n_tokens: torch.Tensor, T: int,
                 max_seq_len: int):
        device = slots.device
        t = torch.arange(T, device=device)
        self.slots = slots
        self.positions = start_pos[:, None] + t[None, :]                       # [B, T]
        valid = t[None, :] < n_tokens[:, None]
        self.w_row, self.w_col = valid.nonzero(as_tuple=True)
        self.w_slot = slots[self.w_row]
        self.w_pos = self.positions[self.w_row, self.w_col]
        # Read span: the longest row's end. Host sync once per step (not per layer).
        self.span = int((start_pos + n_tokens).max())
        if self.span > max_seq_len:
            raise ValueError(f"sequence reaches position {self.span} but the KV cache holds {max_seq_len}")
        keys = torch.arange(self.span, device=device)
        self.mask = (keys[None, None, :] <= self.positions[:, :, None])[:, None]  # [B, 1, T, L]


class StageModel(nn.Module):
    """The layers ``layer_ids`` of a Llama decoder; embedding if first, norm + lm_head if last."""

    def __init__(self, shape: ModelShape, layer_ids: range, *, stage: int, is_first: bool, is_last: bool):
        super().__init__()
        self.shape = shape
        self.stage, self.is_first, self.is_last, self.layer_ids = stage, is_first, is_last, layer_ids
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(shape.vocab, shape.hidden) if is_first else None
        self.model.layers = nn.ModuleDict({str(i): DecoderLayer(shape) for i in layer_ids})
        self.model.norm = RMSNorm(shape.hidden, shape.rms_norm_eps) if is_last else None
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False) if is_last else None
        self.inv_freq: torch.Tensor | None = None   # set by init_rope once the device is known
        self.max_seq_len = 0

    def init_rope(self, device: torch.device) -> None:
        self.inv_freq = rope_inv_freq(self.shape, device)

    def allocate_kv(self, num_slots: int, max_seq_len: int) -> int:
        """Preallocate every layer's K and V cache; returns their bytes."""
        self.max_seq_len = max_seq_len
        return sum(layer.self_attn.allocate_kv(num_slots, max_seq_len) for layer in self.model.layers.values())

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_first:
            if x.dtype != torch.long:
                raise TypeError("the first stage takes token ids (int64)")
            return self.model.embed_tokens(x)
        return x

    def _layers(self, h: torch.Tensor, batch: BatchIndex) -> torch.Tensor:
        cos, sin = rope_cos_sin(self.inv_freq, batch.positions, h.dtype)
        for layer in self.model.layers.values():
            h = layer(h, cos, sin, batch)
        return h

    def _hidden(self, x, slots, start_pos, n_tokens) -> torch.Tensor:
        h = self._embed(x)
        batch = BatchIndex(slots, start_pos, n_tokens, h.shape[1], self.max_seq_len)
        return self._layers(h, batch)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(h)).float()

    def _last_logits(self, h: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
        last = h[torch.arange(h.shape[0], device=h.device), n_tokens - 1]   # [B, hidden]
        return self._logits(last)

    @torch.no_grad()
    def forward(self, x, slots, start_pos, n_tokens) -> torch.Tensor:
        """Not last stage: hidden ``[B, T, hidden]``. Last stage: fp32 logits of each row's last
        valid token over this rank's vocabulary slice, ``[B, local_vocab]``."""
        h = self._hidden(x, slots, start_pos, n_tokens)
        return h if not self.is_last else self._last_logits(h, n_tokens)

    @torch.no_grad()
    def forward_indexed(self, x: torch.Tensor, batch: BatchIndex, n_tokens: torch.Tensor) -> torch.Tensor:
        """``forward`` on a ``BatchIndex`` the caller built from (slots, start_pos, n_tokens, T,
        max_seq_len): the same modules and kernels, so the same output and cache writes. Building
        the index is where ``forward`` syncs the host (``nonzero``, ``int(max)``); this path has
        no sync, so a CUDA graph can capture it (harness/emulate/step.py) and replay it while
        the inputs and the index stay where they are."""
        h = self._layers(self._embed(x), batch)
        return h if not self.is_last else self._last_logits(h, n_tokens)

    @torch.no_grad()
    def forward_all_logits(self, x, slots, start_pos, n_tokens) -> torch.Tensor:
        """Last stage only: fp32 logits of every position, ``[B, T, local_vocab]``."""
        if not self.is_last:
            raise RuntimeError("forward_all_logits needs the last stage")
        return self._logits(self._hidden(x, slots, start_pos, n_tokens))
