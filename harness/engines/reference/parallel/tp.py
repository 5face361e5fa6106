"""Tensor parallelism applied from outside, as data (Megatron style, hand-written collectives).

``LLAMA_TP_PLAN`` says how each submodule is split:

- ``colwise``: a linear's output features (weight dim 0) are split; no communication. Q, K, V,
  gate and up: each rank computes its own heads / intermediate slice.
- ``rowwise``: a linear's input features (weight dim 1) are split; each rank's partial output is
  summed by ``comm.all_reduce(group="tp")``. O and down.
- ``vocab``: the embedding's rows (vocab) are split; ids outside a rank's range give 0, and the
  all-reduce assembles the full embedding.
- ``vocab_colwise`` (``lm_head``): ``colwise`` over the vocabulary; each rank computes logits over
  its vocab slice; sampling combines them (``greedy_sample``: one all_gather of (max, argmax) per
  row).

A vocabulary the TP degree does not divide is padded as vLLM pads it: each rank holds ceil(V/tp)
rows, the last rank's rows past V are zero (the embedding never looks them up: ids are < V), and
their logits are set to -inf by a hook on the lm_head, so they are never sampled.

Per token and layer that is 2 all-reduces of ``hidden`` elements (O and down), plus one for the
embedding on the first stage and one all_gather of 2 values per row for sampling on the last.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from harness.engines.reference.comm import Comm
from harness.engines.reference.model.weights import Shard

LLAMA_TP_PLAN: dict[str, str] = {
    "model.embed_tokens": "vocab",
    "model.layers.*.self_attn.q_proj": "colwise",
    "model.layers.*.self_attn.k_proj": "colwise",
    "model.layers.*.self_attn.v_proj": "colwise",
    "model.layers.*.self_attn.o_proj": "rowwise",
    "model.layers.*.mlp.gate_proj": "colwise",
    "model.layers.*.mlp.up_proj": "colwise",
    "model.layers.*.mlp.down_proj": "rowwise",
    "lm_head": "vocab_colwise",
}

_SPLIT_DIM = {"colwise": 0, "rowwise": 1, "vocab": 0, "vocab_colwise": 0}
_PADDED = ("vocab", "vocab_colwise")  # split over the vocabulary: padded when tp does not divide it


def tp_rank(comm: Comm) -> int:
    """This rank's index in its TP group (group members are listed in TP order)."""
    return comm.groups["tp"][1].index(comm.rec.rank)


class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, start + weight.shape[0])`` of the embedding; the parameter stays
    ``weight``."""

    def __init__(self, local_rows: int, dim: int, start: int, comm: Comm, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(local_rows, dim, device=device))
        self.start, self.comm = start, comm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        out = out.masked_fill(outside[..., None], 0.0)
        return self.comm.all_reduce(out, "tp")


def _meta_param(shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)


def apply_tp(model: nn.Module, plan: dict[str, str], comm: Comm) -> dict[str, Shard]:
    """Split the (meta-device) modules named by ``plan`` for this rank's TP shard, in place.

    Returns ``{parameter name: Shard}`` for every split parameter; parameters absent from it are
    replicated. With a TP group of one, nothing changes and the result is empty.
    """
    parts = comm.size("tp")
    if parts == 1:
        return {}
    index = tp_rank(comm)
    shards: dict[str, Shard] = {}
    for name, module in list(model.named_modules()):
        style = next((s for pat, s in plan.items() if fnmatch.fnmatchcase(name, pat)), None)
        if style is None:
            continue
        if style not in _SPLIT_DIM:
            raise ValueError(f"unknown TP style {style!r} for {name}")
        shard = Shard(_SPLIT_DIM[style], index, parts, padded=style in _PADDED)
        global_shape = tuple(module.weight.shape)
        local = shard.local_shape(global_shape)
        if style == "vocab":
            parent_name, _, child = name.rpartition(".")
            new = VocabParallelEmbedding(local[0], local[1], index * local[0], comm, device="meta")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        else:
            module.weight = _meta_param(local)
            if hasattr(module, "in_features"):
                module.in_features, module.out_features = local[1], local[0]
            if style == "rowwise":
                module.register_forward_hook(_all_reduce_output(comm))
            lo, hi = shard.bounds(global_shape)
            if style == "vocab_colwise" and hi - lo < local[0]:
                module.register_forward_hook(_mask_padding(hi - lo))
        shards[name + ".weight"] = shard
    return shards


def _all_reduce_output(comm: Comm):
    def hook(_module, _inputs, output):
        return comm.all_reduce(output, "tp")

    return hook


def _mask_padding(real: int):
    """Logits of the padded vocabulary rows (local columns >= ``real``) become -inf: never the
    argmax."""

    def hook(_module, _inputs, output):
        return output.index_fill(
            -1, torch.arange(real, output.shape[-1], device=output.device), float("-inf")
        )

    return hook


def greedy_sample(local_logits: torch.Tensor, comm: Comm) -> torch.Tensor:
    """Argmax over the full vocabulary from each rank's slice ``[B, ceil(vocab/tp)]`` -> ids ``[B]``
    int64.

    One all_gather of ``[B, 2]`` float64 (local max, global id; both exact in float64). Ties go
    to the lowest id, as ``torch.argmax``: within a rank argmax takes the first, and across
    ranks the first (lowest-vocab) rank holding the maximum wins."""
    val, idx = local_logits.max(dim=-1)
    if comm.size("tp") == 1:
        return idx
    offset = tp_rank(comm) * local_logits.shape[-1]
    packed = torch.stack([val.double(), (idx + offset).double()], dim=-1)
    gathered = torch.stack(comm.all_gather(packed, "tp"))  # [tp, B, 2]
    best = gathered[..., 0].argmax(dim=0)  # first max over ranks
    return gathered[..., 1].gather(0, best[None]).squeeze(0).long()


def gather_logits(local_logits: torch.Tensor, comm: Comm, vocab: int | None = None) -> torch.Tensor:
    """Full-vocabulary logits from every rank's slice (tests); ``vocab``: drop the padded
    columns."""
    return torch.cat(comm.all_gather(local_logits, "tp"), dim=-1)[..., :vocab]
