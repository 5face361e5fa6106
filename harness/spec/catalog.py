"""Model presets and the GPU catalogue: facts, each with where it comes from.

Pure data; no torch import, so planning works on a laptop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from harness.errors import UsageError, shown


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Llama-family decoder that every formula needs."""

    name: str
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_context: int
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # Llama 3.1 style rope scaling ({"rope_type": "llama3", "factor": ...}) or None.
    rope_scaling: dict | None = None

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def vocab_shard(self, tp: int) -> int:
        """Vocabulary rows each of ``tp`` ranks holds: ceil(V/tp). As vLLM does, a vocabulary ``tp``
        does not divide is padded to tp·ceil(V/tp) rows (zero weights whose logits are never
        sampled)."""
        return -(-self.vocab // tp)

    def layer_params(self) -> int:
        """Parameters of one decoder layer: q,k,v,o + gate,up,down + two RMSNorm weights."""
        attn = self.hidden * self.q_dim * 2 + self.hidden * self.kv_dim * 2
        mlp = 3 * self.hidden * self.intermediate
        return attn + mlp + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def total_params(self) -> int:
        head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return self.num_layers * self.layer_params() + self.embedding_params() + head + self.hidden


# Sources: the config.json files published with Meta's Llama 3 / 3.1 checkpoints.
MODEL_PRESETS: dict[str, ModelShape] = {
    "llama3-70b": ModelShape(
        "llama3-70b",
        hidden=8192,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate=28672,
        vocab=128256,
        max_context=8192,
    ),
    "llama3-8b": ModelShape(
        "llama3-8b",
        hidden=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate=14336,
        vocab=128256,
        max_context=8192,
    ),
    "llama3.1-405b": ModelShape(
        "llama3.1-405b",
        hidden=16384,
        num_layers=126,
        num_heads=128,
        num_kv_heads=8,
        head_dim=128,
        intermediate=53248,
        vocab=128256,
        max_context=131072,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    # Sources: the config.json files published with Meta's Llama 2 checkpoints (MLPerf's
    # Llama2-70B).
    "llama2-70b": ModelShape(
        "llama2-70b",
        hidden=8192,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate=28672,
        vocab=32000,
        max_context=4096,
        rope_theta=10000.0,
    ),
    "llama2-13b": ModelShape(
        "llama2-13b",
        hidden=5120,
        num_layers=40,
        num_heads=40,
        num_kv_heads=40,
        head_dim=128,
        intermediate=13824,
        vocab=32000,
        max_context=4096,
        rope_theta=10000.0,
    ),
    "llama2-7b": ModelShape(
        "llama2-7b",
        hidden=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        intermediate=11008,
        vocab=32000,
        max_context=4096,
        rope_theta=10000.0,
    ),
    # The CPU twin: same architecture, small enough for 8 gloo ranks on 2 cores.
    "tiny": ModelShape(
        "tiny",
        hidden=64,
        num_layers=8,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate=128,
        vocab=256,
        max_context=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
    ),
}

# The report's "Llama3-70B-Instruct" is the same shape as the base model.
MODEL_ALIASES = {
    "llama3-70b-instruct": "llama3-70b",
    "llama-3-70b": "llama3-70b",
    "meta-llama-3-70b": "llama3-70b",
    "llama3-8b-instruct": "llama3-8b",
    "llama-3-8b": "llama3-8b",
    "meta-llama-3-8b": "llama3-8b",
    "llama3.1-405b-instruct": "llama3.1-405b",
    "llama-3.1-405b": "llama3.1-405b",
    "llama3.1-70b": "llama3-70b",
    "llama3.1-70b-instruct": "llama3-70b",
    "llama3.1-8b": "llama3-8b",
    "llama3.1-8b-instruct": "llama3-8b",
    "llama-2-70b": "llama2-70b",
    "llama2-70b-chat": "llama2-70b",
    "llama-2-13b": "llama2-13b",
    "llama2-13b-chat": "llama2-13b",
    "llama-2-7b": "llama2-7b",
    "llama2-7b-chat": "llama2-7b",
}


def model_preset(name: str, field: str = "model.preset") -> ModelShape:
    key = name.strip().lower()
    key = MODEL_ALIASES.get(key, key)
    if key not in MODEL_PRESETS:
        raise UsageError(
            f"{field}: unknown model preset {name!r}; use one of "
            f"{', '.join(MODEL_PRESETS)} or a path to a Hugging Face config.json"
        )
    return MODEL_PRESETS[key]


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator's facts. Bandwidths in GB/s (1e9 bytes/s), memory in GiB as the driver
    reports it."""

    name: str
    memory_gib: float
    hbm_gbps: float  # HBM bandwidth
    bf16_tflops: float  # dense bf16 tensor-core peak, no sparsity
    link_gbps: float  # intra-node GPU-GPU bandwidth, per direction
    internode_gbps: float  # per GPU, per direction
    intra_link: str
    inter_link: str
    source: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)


GPU_CATALOG: dict[str, GpuSpec] = {
    "H100-SXM-80GB": GpuSpec(
        "H100-SXM-80GB",
        79.6,
        3350.0,
        989.0,
        450.0,
        50.0,
        "NVLink4 (18 links)",
        "InfiniBand NDR 400 Gb/s per GPU",
        "NVIDIA H100 datasheet: 80 GB HBM3 (81559 MiB usable), 3.35 TB/s, "
        "989 TFLOPS bf16 dense, NVLink 900 GB/s bidirectional",
    ),
    "H200-SXM-141GB": GpuSpec(
        "H200-SXM-141GB",
        140.4,
        4800.0,
        989.0,
        450.0,
        50.0,
        "NVLink4 (18 links)",
        "InfiniBand NDR 400 Gb/s per GPU",
        "NVIDIA H200 datasheet: 141 GB HBM3e (143771 MiB usable), 4.8 TB/s, "
        "989 TFLOPS bf16 dense, NVLink 900 GB/s bidirectional",
    ),
    "A100-SXM-80GB": GpuSpec(
        "A100-SXM-80GB",
        80.0,
        2039.0,
        312.0,
        300.0,
        25.0,
        "NVLink3 (12 links)",
        "InfiniBand HDR 200 Gb/s per GPU",
        "NVIDIA A100 datasheet: 80 GB HBM2e, 2039 GB/s, 312 TFLOPS bf16 dense, "
        "NVLink 600 GB/s bidirectional",
    ),
    # The CPU twin: one gloo rank on the project's host (2 AMD EPYC cores, AVX-512). Memory
    # bandwidth and the matmul rate are the ceilings `harness emulate` measured there (the
    # fastest of 10: a 512 MiB copy 22.7 GB/s, an fp32 1024^3 product 187 GFLOP/s; 2026-12-01),
    # rounded up, so the planner's floors stay below what the host does; memory and links notional.
    "cpu": GpuSpec(
        "cpu",
        2.0,
        23.0,
        0.19,
        2.0,
        1.0,
        "loopback (gloo)",
        "TCP (gloo)",
        "CPU host, measured ceilings (harness emulate, 2026-12-01): 23 GB/s copy, 0.19 TFLOP/s "
        "fp32 matmul; 2 GiB and the gloo links notional",
    ),
}

GPU_ALIASES = {
    "h100": "H100-SXM-80GB",
    "h100-80gb": "H100-SXM-80GB",
    "h100-sxm": "H100-SXM-80GB",
    "h200": "H200-SXM-141GB",
    "h200-141gb": "H200-SXM-141GB",
    "h200-sxm": "H200-SXM-141GB",
    "a100": "A100-SXM-80GB",
    "a100-80gb": "A100-SXM-80GB",
    "a100-sxm": "A100-SXM-80GB",
}


def gpu_spec(name: str, overrides: dict | None = None, field: str = "cluster.gpu") -> GpuSpec:
    key = GPU_ALIASES.get(name.strip().lower(), name.strip())
    match = next((g for k, g in GPU_CATALOG.items() if k.lower() == key.lower()), None)
    if match is None:
        raise UsageError(f"{field}: unknown GPU {shown(name)}; use one of {', '.join(GPU_CATALOG)}")
    if not overrides:
        return match
    known = {f.name for f in fields(GpuSpec)} - {"name"}
    for k, v in overrides.items():
        if k not in known:
            raise UsageError(
                f"cluster.overrides.{k}: unknown catalogue field; use one of "
                f"{', '.join(sorted(known))}"
            )
        if k in ("intra_link", "inter_link", "source"):
            if not isinstance(v, str):
                raise UsageError(f"cluster.overrides.{k}: expected text, got {shown(v)}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1e9:
            # NaN fails 0 < v too: a NaN bandwidth would give NaN bounds and a PASS
            raise UsageError(
                f"cluster.overrides.{k}: must be a positive finite number (at most 1e9), got "
                f"{shown(v)}"
            )
    return replace(match, **overrides)


# CUDA device names (torch.cuda.get_device_name, nvidia-smi) -> catalogue entry. Only the exact
# parts the catalogue describes: an H100 PCIe or NVL, an H200 NVL, a GH200, a 40 GB A100 have
# other memory, bandwidth or links, so they map to nothing rather than to the SXM part.
_DEVICE_PATTERNS = (
    (re.compile(r"\bh100\b(?!.*\b(pcie|nvl)\b).*\b80gb\b"), "H100-SXM-80GB"),
    (re.compile(r"\bh200\b(?!.*\b(pcie|nvl)\b)"), "H200-SXM-141GB"),
    (re.compile(r"\ba100-sxm4?-80gb\b"), "A100-SXM-80GB"),
)


def catalog_key_for_device(device_name: str) -> str | None:
    """The catalogue entry of the device named ``device_name`` ("NVIDIA H100 80GB HBM3" ->
    "H100-SXM-80GB", "CPU"/"cpu" -> "cpu"), or None when the catalogue does not describe it."""
    low = device_name.strip().lower()
    if low == "cpu":
        return "cpu"
    return next((key for pattern, key in _DEVICE_PATTERNS if pattern.search(low)), None)


def gpu_label(spec_gpu: str, device_names: list[str]) -> tuple[str, str | None]:
    """What a run's ``hardware.gpu`` says: the catalogue entry of the devices it ran on (their
    own name when the catalogue has none; ``mixed: ...`` when ranks differ), never the spec's
    GPU; and a warning when that is not the spec's ``cluster.gpu`` (None when it is)."""
    names = sorted(set(device_names)) or ["unknown"]
    labels = sorted({catalog_key_for_device(n) or n for n in names})
    label = labels[0] if len(labels) == 1 else "mixed: " + ", ".join(labels)
    if label == spec_gpu:
        return label, None
    return label, (
        f"hardware: the spec names {spec_gpu} but the run's devices are {', '.join(names)} "
        f"({label}); hardware.gpu says what ran, and the plan's floors are {spec_gpu}'s"
    )
