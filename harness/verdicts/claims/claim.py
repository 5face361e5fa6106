"""The claim records: one claim (id, claimed value in canonical units, source line, quantum) and the
document that holds them with the model, hardware and strategy it names.

Canonical units: GB = 1e9 bytes, bytes, percent, fractions (ε, bubble), requests/s; a size claim
keeps the unit it was stated in (``unit``), whose other readings (GB as GiB ...)
harness.verdicts.claims.units
gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError

CLAIM_IDS = (
    "total_gpus",
    "gpu_memory_gb",
    "model_memory_gb",
    "memory_per_gpu_gb",
    "memory_utilization_pct",
    "memory_balance_epsilon",
    "throughput_rps",
    "gpu_utilization_pct",
    "bubble_ratio",
    "tp_allreduce_bytes_per_layer",
    "pp_sendrecv_bytes_per_stage",
    "nvlink_utilization_pct",
    "stage_layers",
    "tp_group_gpus",
    "stage_memory_gb",
    # ids of our own (docs/claims.md): GPUs used / available, and the report's SLO sentences
    "gpu_allocation_pct",
    "slo_margin_pct",
    "latency_slos_met",
)
PER_STAGE = ("stage_layers", "stage_memory_gb")
PER_GROUP = ("tp_group_gpus",)


@dataclass
class Claim:
    id: str
    claimed: Any  # float | list[int] | [lo, hi] | bool, in canonical units
    text: str  # the source line, markdown stripped
    index: int | None = None  # stage (per-stage ids) or TP group (tp_group_gpus)
    quantum: float = 0.0  # half a unit of the last stated digit, canonical units
    context: dict = field(default_factory=dict)  # e.g. {"stage": 0, "layers": [0, 19]}
    unit: str | None = None  # the size unit as stated ("GB", "KB", "GiB", "bytes"); None: no unit
    bound: str | None = None  # "upper" ("< 0.05", "under 40GB"), "lower" ("> 8 RPS"); None: a value


@dataclass
class ClaimsDoc:
    path: str
    kind: str  # markdown | yaml
    model: str | None = None  # as named, e.g. "llama3-70b-instruct"
    dtype: str | None = None
    gpu: str | None = None  # catalogue name
    total_gpus: int | None = None  # GPUs the hardware line names
    nodes: int | None = None
    gpus_per_node: int | None = None
    strategy: dict | None = None  # {tp, pp, dp, ep}
    config: str | None = None  # a spec path named by a claims YAML (absolute)
    claims: list[Claim] = field(default_factory=list)


def number(text: str, where: str = "claim") -> tuple[float, float]:
    """'32,768' -> (32768, 0.5); '43.75' -> (43.75, 0.005); '-3' -> (-3, 0.5); '2.5e9' -> (2.5e9,
    5e7); '1e-3' -> (0.001, 0.0005): the value (int when written without a decimal point or
    exponent) and half a unit of its last stated digit. A value that is not a finite number is a
    UsageError."""
    t = text.strip().replace(",", "").replace("\u2212", "-")
    mantissa, _, exp = t.lower().partition("e")
    try:
        e = int(exp) if exp else 0
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        value = float(t)
        if not math.isfinite(value) or abs(e) > 300:
            raise OverflowError
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(
            f"{where}: {shown!r} is not a finite number; write it in plain digits (e.g. 35, 2.5e9)"
        ) from None
    quantum = 0.5 * 10.0 ** (e - decimals)
    if "." not in mantissa and not exp:
        return int(t), quantum
    return value, quantum
