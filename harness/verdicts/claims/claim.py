"""The claim records: one claim (id, claimed value in canonical units, source line, quantum) and the
document that holds them with the model, hardware and strategy it names.

Canonical units: GB = 1e9 bytes, bytes, percent, fractions (ε, bubble), requests/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CLAIM_IDS = (
    "total_gpus", "gpu_memory_gb", "model_memory_gb", "memory_per_gpu_gb", "memory_utilization_pct",
    "memory_balance_epsilon", "throughput_rps", "gpu_utilization_pct", "bubble_ratio",
    "tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage", "nvlink_utilization_pct",
    "stage_layers", "tp_group_gpus", "stage_memory_gb",
    # ids of our own (docs/claims.md): GPUs used / available, and the report's SLO sentences
    "gpu_allocation_pct", "slo_margin_pct", "latency_slos_met",
)
PER_STAGE = ("stage_layers", "stage_memory_gb")
PER_GROUP = ("tp_group_gpus",)


@dataclass
class Claim:
    id: str
    claimed: Any                  # float | list[int] | [lo, hi] | bool, in canonical units
    text: str                     # the source line, markdown stripped
    index: int | None = None      # stage (per-stage ids) or TP group (tp_group_gpus)
    quantum: float = 0.0          # half a unit of the last stated digit, canonical units
    context: dict = field(default_factory=dict)   # e.g. {"stage": 0, "layers": [0, 19]}


@dataclass
class ClaimsDoc:
    path: str
    kind: str                     # markdown | yaml
    model: str | None = None      # as named, e.g. "llama3-70b-instruct"
    dtype: str | None = None
    gpu: str | None = None        # catalogue name
    total_gpus: int | None = None     # GPUs the hardware line names
    nodes: int | None = None
    gpus_per_node: int | None = None
    strategy: dict | None = None  # {tp, pp, dp, ep}
    config: str | None = None     # a spec path named by a claims YAML (absolute)
    claims: list[Claim] = field(default_factory=list)


def number(text: str) -> tuple[float, float]:
    """'32,768' -> (32768, 0.5); '43.75' -> (43.75, 0.005): the value (int when written without a
    decimal point) and half a unit of its last digit."""
    t = text.replace(",", "")
    if "." not in t:
        return int(t), 0.5
    return float(t), 0.5 * 10.0 ** -len(t.split(".")[1])

