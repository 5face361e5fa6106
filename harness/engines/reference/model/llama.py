"""A Llama decoder stage on one device. It knows nothing of tensor or pipeline parallelism.

Parallelism is applied from outside (harness/parallel/tp.py, harness/model/build.py): a stage
holds any contiguous subset of the decoder layers, plus the embedding on the first stage and
the final norm and lm_head on the last; the TP plan changes only the *shapes* of the linear
weights, and every module reads its local head count from its weights, so the same code runs a
full model or one shard of one stage.

Parameter names are those of Hugging Face's ``LlamaForCausalLM`` (``model.embed_tokens.weight``,
``model.layers.{i}.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``):
the layers live in a ``ModuleDict`` keyed by their global index, so checkpoints map 1:1.

KV cache and attention: harness/engines/reference/model/attention.py (one preallocated K and V
per layer, indexed by sequence slot, read in place). Tokens run packed (``[N]`` ids or ``[N,
hidden]``, rows contiguous); ``forward`` also takes the padded ``[B, T]`` form and answers in it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.engines.reference.model.attention import (
    BatchIndex,
    attend,
    choose_kernel,
    slot_tokens,
    write_kv,
)
from harness.errors import UsageError
from harness.spec.catalog import ModelShape
from harness.spec.checkpoint import hf_tensor_shapes as hf_param_shapes  # noqa: F401 (HF names, one place)


def rope_inv_freq(shape: ModelShape, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, fp32 ``[head_dim/2]``.

    Base: ``1 / theta^(2i/d)``. With ``rope_scaling.rope_type == "llama3"`` (Llama 3.1), a
    frequency whose wavelength ``2*pi/f`` exceeds ``original_max_position_embeddings /
    low_freq_factor`` is divided by ``factor``; one shorter than ``... / high_freq_factor`` is
    kept; between the two, it is a linear blend in ``s = (orig_ctx / wavelength - low) / (high -
    low)``: ``(1 - s) * f / factor + s * f``."""
    d = shape.head_dim
    inv = 1.0 / (
        shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d)
    )
    rs = shape.rope_scaling
    if not rs:
        return inv
    kind = rs.get("rope_type") or rs.get("type")
    if kind == "default":
        return inv
    if kind != "llama3":
        raise UsageError(
            f"model.rope_scaling.rope_type: {kind!r} is not supported; use llama3 or none"
        )
    try:
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        orig = float(rs["original_max_position_embeddings"])
    except KeyError as e:
        raise UsageError(
            f"model.rope_scaling.{e.args[0]}: missing; llama3 rope scaling needs factor, "
            "low_freq_factor, high_freq_factor and original_max_position_embeddings"
        ) from None
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
    """cos and sin ``[..., head_dim]`` for integer positions ``[...]`` (packed: ``[N]``), in fp32
    then cast."""
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)``, normalised in fp32, cast back before the weight (as
    HF)."""

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
        self.k_cache: torch.Tensor | None = None  # [slots, slot_tokens, local_kv_heads, head_dim]
        self.v_cache: torch.Tensor | None = None

    @property
    def local_kv_heads(self) -> int:
        return self.k_proj.weight.shape[0] // self.head_dim

    def allocate_kv(self, num_slots: int, slot_len: int) -> int:
        w = self.k_proj.weight
        # Zeros, not empty: a kernel may touch a page past a row's end (0 * NaN = NaN).
        kw = dict(dtype=w.dtype, device=w.device)
        self.k_cache = torch.zeros(num_slots, slot_len, self.local_kv_heads, self.head_dim, **kw)
        self.v_cache = torch.zeros_like(self.k_cache)
        return 2 * self.k_cache.numel() * self.k_cache.element_size()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: BatchIndex
    ) -> torch.Tensor:
        if self.k_cache is None:
            raise RuntimeError("KV cache not allocated: call StageModel.allocate_kv first")
        n, d = x.shape[0], self.head_dim
        q = self.q_proj(x).view(n, -1, d)
        k = self.k_proj(x).view(n, -1, d)
        v = self.v_proj(x).view(n, -1, d)
        c, s = cos[:, None, :], sin[:, None, :]
        q = q * c + _rotate_half(q) * s
        k = k * c + _rotate_half(k) * s
        write_kv(self.k_cache, self.v_cache, k, v, batch)
        return self.o_proj(attend(q, self.k_cache, self.v_cache, batch).reshape(n, -1))


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


class StageModel(nn.Module):
    """The layers ``layer_ids`` of a Llama decoder; embedding if first, norm + lm_head if last."""

    def __init__(
        self, shape: ModelShape, layer_ids: range, *, stage: int, is_first: bool, is_last: bool
    ):
        super().__init__()
        self.shape = shape
        self.stage, self.is_first, self.is_last, self.layer_ids = (
            stage,
            is_first,
            is_last,
            layer_ids,
        )
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(shape.vocab, shape.hidden) if is_first else None
        self.model.layers = nn.ModuleDict({str(i): DecoderLayer(shape) for i in layer_ids})
        self.model.norm = RMSNorm(shape.hidden, shape.rms_norm_eps) if is_last else None
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False) if is_last else None
        self.inv_freq: torch.Tensor | None = None  # set by init_rope once the device is known
        self.max_seq_len = 0
        self.slot_len = 0  # positions a slot's cache holds (max_seq_len, whole pages when paged)
        self.kernel = "rows"  # the attention kernel (model/attention.py), set by allocate_kv
        self.failed_kernels: set[str] = set()  # kernels that raised here: never chosen again

    def init_rope(self, device: torch.device) -> None:
        self.inv_freq = rope_inv_freq(self.shape, device)

    def allocate_kv(self, num_slots: int, max_seq_len: int, slot_len: int | None = None) -> int:
        """Preallocate every layer's K and V cache; returns their bytes. ``slot_len``: positions
        per slot as the planner counted them (``plan.run["slot_tokens"]``, >= ``max_seq_len``), so
        the allocation is the plan's; without it, ``max_seq_len`` in whole pages when the paged
        kernel serves this device and torch."""
        if slot_len is not None and slot_len < max_seq_len:
            raise ValueError(f"slot_len {slot_len} is shorter than max_seq_len {max_seq_len}")
        w = next(self.parameters())
        hd, failed = self.shape.head_dim, self.failed_kernels
        if slot_len is None:
            kernel = choose_kernel(w.device, w.dtype, hd, None, failed)
            slot_len = slot_tokens(max_seq_len, kernel == "paged")
        self.kernel = choose_kernel(w.device, w.dtype, hd, slot_len, failed)
        self.max_seq_len, self.slot_len = max_seq_len, slot_len
        return sum(
            layer.self_attn.allocate_kv(num_slots, self.slot_len)
            for layer in self.model.layers.values()
        )

    @property
    def paged(self) -> bool:
        """The paged flash kernel serves this model's attention."""
        return self.kernel == "paged"

    def index(
        self,
        slots: torch.Tensor,
        start_pos: torch.Tensor,
        n_tokens: torch.Tensor,
        width: int | None = None,
        host: tuple[list[int], list[int], list[int]] | None = None,
    ) -> BatchIndex:
        """The step's ``BatchIndex`` for this stage's cache (``width``: the inputs are padded;
        ``host``: the same rows as host integers, so building it reads nothing back)."""
        return BatchIndex(
            slots,
            start_pos,
            n_tokens,
            self.max_seq_len,
            width=width,
            kernel=self.kernel,
            slot_len=self.slot_len,
            host=host,
        )

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
        if batch.failed:  # a kernel raised: stay on the one that served the step
            self.failed_kernels.update(batch.failed)
            self.kernel = batch.kernel
        return h

    def _padded(self, x: torch.Tensor) -> bool:
        """Padded input: ids ``[B, T]`` on the first stage, hidden ``[B, T, hidden]`` after it."""
        return x.dim() == (2 if self.is_first else 3)

    def _hidden(self, x, slots, start_pos, n_tokens, host=None) -> tuple[torch.Tensor, BatchIndex]:
        """-> (packed hidden ``[N, hidden]`` after this stage's layers, the step's index)."""
        padded = self._padded(x)
        batch = self.index(slots, start_pos, n_tokens, x.shape[1] if padded else None, host)
        h = self._embed(batch.pack(x) if padded else x)
        return self._layers(h, batch), batch

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(h)).float()

    def _output(self, h: torch.Tensor, batch: BatchIndex) -> torch.Tensor:
        if self.is_last:
            return self._logits(h[batch.last])  # [B, local_vocab]: each row's last token
        return h if batch.width is None else batch.unpack(h)

    @torch.no_grad()
    def forward(self, x, slots, start_pos, n_tokens, host=None) -> torch.Tensor:
        """``x``: packed ``[N]`` ids / ``[N, hidden]`` (rows contiguous, ``N = sum(n_tokens)``) or
        padded ``[B, T]`` / ``[B, T, hidden]``. Not last stage: hidden in the input's form. Last
        stage: fp32 logits of each row's last token over this rank's vocabulary slice, ``[B,
        local_vocab]``. ``host``: the rows as host integers (``index``): then nothing is read
        back from the device."""
        h, batch = self._hidden(x, slots, start_pos, n_tokens, host)
        return self._output(h, batch)

    @torch.no_grad()
    def forward_indexed(self, x: torch.Tensor, batch: BatchIndex) -> torch.Tensor:
        """``forward`` of packed ``x`` on a ``BatchIndex`` the caller built with ``index``: the same
        modules and kernels, so the same output and cache writes. Building the index is where
        ``forward`` syncs the host (the rows as ints); this path has none, so a CUDA graph can
        capture it (harness/emulate/step.py) and replay it while the inputs and the index stay put.
        The output is in the index's form (padded ``[B, width, hidden]`` when built with
        ``width``)."""
        return self._output(self._layers(self._embed(x), batch), batch)

    @torch.no_grad()
    def forward_all_logits(self, x, slots, start_pos, n_tokens) -> torch.Tensor:
        """Last stage only: fp32 logits of every token, ``[N, local_vocab]`` (padded input:
        ``[B, T, local_vocab]``, zeros at padding)."""
        if not self.is_last:
            raise RuntimeError("forward_all_logits needs the last stage")
        h, batch = self._hidden(x, slots, start_pos, n_tokens)
        logits = self._logits(h)
        return logits if batch.width is None else batch.unpack(logits)
