"""Which GPUs a launched vLLM server uses, and how it is told (pure).

vLLM puts its rank r (r < tp·pp·dp) on CUDA device r of the devices it sees. The harness makes that
the spec's placement: the server sees ``CUDA_VISIBLE_DEVICES`` = the job's devices
``parallel.gpu_map[r]`` for r = 0 … world − 1 (default: 0 … world − 1), in rank order,
written as the job sees them (the entries of the job's own ``CUDA_VISIBLE_DEVICES`` when Slurm or
the user set one: an index or a ``GPU-…`` UUID; else the index itself), and
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that an index means the same GPU to CUDA and to NVML. The
telemetry then samples exactly these GPUs (``harness.engines.openai_server.telemetry``), never the
rest of a shared node. A ``cluster.gpu: cpu`` spec uses none.
"""

from __future__ import annotations

from harness.errors import UsageError


def server_gpus(spec, visible: str | None) -> list[str]:
    """The server's devices, as entries the NVML sampler can find: indices or UUIDs."""
    if spec.cluster.gpu.strip().lower() == "cpu" or spec.run.device == "cpu":
        return []
    order = list(spec.parallel.gpu_map or range(spec.layout.world_size))  # one node: world = gpn
    job = [v.strip() for v in visible.split(",") if v.strip()] if visible else None
    if job is None:
        return [str(i) for i in order]
    missing = [i for i in order if i >= len(job)]
    if missing:
        raise UsageError(
            f"parallel.gpu_map: device(s) {missing} but the job sees {len(job)} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={visible}); ask Slurm for {spec.cluster.gpus_per_node} GPUs "
            f"(--gpus-per-node) or map the ranks onto 0..{len(job) - 1}"
        )
    return [job[i] for i in order]


def gpu_env(gpus: list[str]) -> dict[str, str]:
    """The server's environment for its devices (nothing on the CPU)."""
    if not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def sampler_devices(gpus: list[str]) -> dict:
    """``NvmlSampler`` keyword for these devices: NVML indices, or UUIDs when any entry is one."""
    if all(g.isdigit() for g in gpus):
        return {"devices": [int(g) for g in gpus]}
    return {"uuids": list(gpus)}
