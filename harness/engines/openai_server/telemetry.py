"""NVML on this node's GPUs during a run against a server, rows stamped on the run's clock and
with the node name (the ``nvml`` table). A launched server's own telemetry (its process tree on a
machine without GPUs) is ``harness.engines.vllm.telemetry``."""

from __future__ import annotations

import os
from typing import Callable

from harness.measure.nvml import NvmlSampler


class GpuSampler:
    """NVML on this node's GPUs, rows stamped on the run's clock and with the node name."""

    def __init__(self, sampler: NvmlSampler):
        self.sampler, self.note = sampler, None

    def stop(self) -> None:
        self.sampler.stop()

    def rows(self) -> list[dict]:
        node = os.uname().nodename
        return [dict(r, node=node) for r in self.sampler.rows()]


def start_node_sampler(interval_s: float, clock: Callable[[], float]) -> GpuSampler | None:
    """NVML when this node has GPUs, else None."""
    nvml = NvmlSampler(interval_s, clock=clock).start()
    if nvml.using_nvml:
        return GpuSampler(nvml)
    nvml.stop()
    return None
