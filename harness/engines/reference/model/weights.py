"""Where parameters come from: seeded random weights, or slices of a Hugging Face checkpoint.

A source hands out one parameter at a time, already in this rank's sharded form, so that a rank
never holds more than its own share (plus, for seeded weights, one full parameter while it is
being sliced)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from harness.errors import UsageError
from harness.spec.checkpoint import checkpoint_files


@dataclass(frozen=True)
class Shard:
    """A split of dimension ``dim`` into ``parts``; this rank holds part ``index``.

    Even unless ``padded``: then every part has ceil(size/parts) rows, the last part(s) ending in
    zero rows past the tensor's end (the vocab-parallel embedding and lm_head of a vocabulary the TP
    degree does not divide, as vLLM pads them)."""

    dim: int
    index: int
    parts: int
    padded: bool = False

    def local_shape(self, global_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = global_shape[self.dim]
        if size % self.parts and not self.padded:
            raise UsageError(
                f"parallel.tp: {self.parts} does not divide a weight dimension of {size}"
            )
        out = list(global_shape)
        out[self.dim] = -(-size // self.parts)
        return tuple(out)

    def bounds(self, global_shape: tuple[int, ...]) -> tuple[int, int]:
        """The rows of the global tensor this part holds (fewer than its local size when padded)."""
        n, size = self.local_shape(global_shape)[self.dim], global_shape[self.dim]
        return min(self.index * n, size), min((self.index + 1) * n, size)


def pad_to_shard(
    part: torch.Tensor, shard: Shard | None, global_shape: tuple[int, ...]
) -> torch.Tensor:
    """``part`` (the shard's real rows) with zero rows appended up to the shard's local size."""
    if shard is None or not shard.padded:
        return part
    want = shard.local_shape(global_shape)[shard.dim]
    missing = want - part.shape[shard.dim]
    if missing == 0:
        return part
    pad_shape = list(part.shape)
    pad_shape[shard.dim] = missing
    return torch.cat([part, part.new_zeros(pad_shape)], dim=shard.dim)


def local_shape(global_shape: tuple[int, ...], shard: Shard | None) -> tuple[int, ...]:
    return tuple(global_shape) if shard is None else shard.local_shape(global_shape)


class WeightSource(Protocol):
    def load(
        self,
        name: str,
        global_shape: tuple[int, ...],
        shard: Shard | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor: ...


@dataclass
class LoadStats:
    """What a source handed out (for the no-full-model check): bytes of every returned shard,
    and the largest transient tensor it built on the way (a full parameter for seeded weights,
    the slice itself for a checkpoint)."""

    returned_bytes: int = 0
    peak_transient_bytes: int = 0
    loads: int = 0

    def note(self, returned: torch.Tensor, transient_bytes: int) -> None:
        self.loads += 1
        self.returned_bytes += returned.numel() * returned.element_size()
        self.peak_transient_bytes = max(self.peak_transient_bytes, transient_bytes)


def name_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed from (seed, parameter name): sha256, not Python's salted ``hash()``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


@dataclass
class SeededWeights:
    """Random weights fixed by (seed, global parameter name): the same full model whatever the
    layout.

    Every linear and embedding weight is ``N(0, init_std^2)``; norm weights are 1. Each parameter is
    generated in full, in fp32, on the target device with a ``torch.Generator`` seeded from its
    name, then sliced to this rank's shard and cast. The transient peak is therefore ONE full
    parameter in fp32 (for Llama3-70B the embedding: 128256 x 8192 x 4 B = 4.2 GB), freed before
    the next. The stream depends on the device type (CPU and CUDA generators differ), so a
    comparison across layouts must use one device type."""

    seed: int
    init_std: float = 0.02
    stats: LoadStats = field(default_factory=LoadStats)

    def load(self, name, global_shape, shard, dtype, device) -> torch.Tensor:
        device = torch.device(device)
        if _is_norm(name):
            out = torch.ones(local_shape(global_shape, shard), dtype=dtype, device=device)
            self.stats.note(out, out.numel() * out.element_size())
            return out
        gen = torch.Generator(device=device)
        gen.manual_seed(name_seed(self.seed, name))
        full = torch.empty(global_shape, dtype=torch.float32, device=device)
        full.normal_(0.0, self.init_std, generator=gen)
        part = full if shard is None else full.narrow(shard.dim, *_start_len(shard, global_shape))
        out = pad_to_shard(part.to(dtype), shard, global_shape).contiguous()
        if out.untyped_storage().data_ptr() == full.untyped_storage().data_ptr():
            out = out.clone()  # never hand out a view that keeps the full tensor alive
        self.stats.note(out, full.numel() * full.element_size())
        del full, part
        return out


def _start_len(shard: Shard, global_shape) -> tuple[int, int]:
    lo, hi = shard.bounds(global_shape)
    return lo, hi - lo


class CheckpointWeights:
    """A Hugging Face folder: ``config.json`` and ``*.safetensors`` (with
    ``model.safetensors.index.json`` when sharded). Only this rank's slice of each tensor is read,
    through ``safe_open(...).get_slice(name)[...]``; a whole file is never loaded.
    """

    def __init__(self, folder: str | Path, field: str = "model.checkpoint"):
        self.folder = Path(folder)
        self.field = field
        self.stats = LoadStats()
        # name -> file; the launcher checked the headers
        self._files = checkpoint_files(self.folder, field)
        self._handles: dict[Path, object] = {}
        self._keys: dict[Path, set[str]] = {}

    def _handle(self, path: Path):
        from safetensors import safe_open

        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types for a bad header
                raise UsageError(
                    f"{self.field}: {path} is not a readable safetensors file ({e})"
                ) from None
            self._keys[path] = set(self._handles[path].keys())
        return self._handles[path]

    def load(self, name, global_shape, shard, dtype, device) -> torch.Tensor:
        if name not in self._files:
            raise UsageError(
                f"{self.field}: tensor {name} is missing from the checkpoint in {self.folder}; "
                "the checkpoint must match the model config"
            )
        path = self._files[name]
        handle = self._handle(path)
        if name not in self._keys[path]:
            raise UsageError(
                f"{self.field}: tensor {name} is missing from {path.name}, though the index lists "
                f"it"
            )
        sl = handle.get_slice(name)
        found = tuple(sl.get_shape())
        if found != tuple(global_shape):
            raise UsageError(
                f"{self.field}: tensor {name} in {path.name} has shape {list(found)}, the model "
                f"config needs {list(global_shape)}; the checkpoint does not match the config"
            )
        index = [slice(None)] * len(found)
        if shard is not None:
            index[shard.dim] = slice(*shard.bounds(found))
        part = sl[tuple(index)]
        out = pad_to_shard(part.to(device=device, dtype=dtype), shard, found).contiguous()
        self.stats.note(out, part.numel() * part.element_size())
        return out

    def close(self) -> None:
        self._handles.clear()
        self._keys.clear()


def full_state_dict(
    shape,
    source: WeightSource,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The whole model, HF names to tensors (tests only: to feed transformers)."""
    from harness.engines.reference.model.llama import hf_param_shapes

    return {
        name: source.load(name, shp, None, dtype, torch.device(device))
        for name, shp in hf_param_shapes(shape).items()
    }
