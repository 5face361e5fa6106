"""NVML on a launched server's GPUs during a run, rows stamped on the run's clock and with the node
name (the ``nvml`` table), and the GPUs' names as NVML reports them (``hardware.gpu`` comes from
them, never from the spec). A launched server's telemetry on a machine without GPUs (its process
tree) is ``harness.engines.vllm.telemetry``; a server someone else runs (``kind: openai``) gets
none: which GPUs it uses is not known here, and sampling the whole node would measure other jobs.
"""

from __future__ import annotations

import os
from typing import Callable

from harness.measure.nvml import NvmlSampler
from harness.measure.nvml_devices import device_names


class GpuSampler:
    """NVML on the server's GPUs, rows stamped on the run's clock and with the node name."""

    def __init__(self, sampler: NvmlSampler):
        self.sampler, self.note = sampler, None
        self.names: list[str] = []

    def stop(self) -> None:
        self.sampler.stop()
        devices = sorted({r["device"] for r in self.sampler.rows() if r.get("device", -1) >= 0})
        self.names = device_names(devices)

    def rows(self) -> list[dict]:
        node = os.uname().nodename
        return [dict(r, node=node) for r in self.sampler.rows()]


def start_node_sampler(
    interval_s: float, clock: Callable[[], float], **devices
) -> GpuSampler | None:
    """NVML on ``devices`` (``NvmlSampler``'s ``devices=`` NVML indices or ``uuids=``) when this
    node has GPUs, else None."""
    nvml = NvmlSampler(interval_s, clock=clock, **devices).start()
    if nvml.using_nvml:
        return GpuSampler(nvml)
    nvml.stop()
    return None
