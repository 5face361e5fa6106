"""Which NVML devices a sampler reads: every GPU of this node, the NVML indices asked for, or the
devices whose UUIDs CUDA reported for this job's ranks.

The UUID is the one name CUDA and NVML agree on: a rank's CUDA index (after CUDA_VISIBLE_DEVICES and
CUDA_DEVICE_ORDER) need not be the NVML index of the same GPU, and a node shared with other jobs has
GPUs this job must not measure. ``nvmlDeviceGetHandleByUUID`` finds the GPU, ``nvmlDeviceGetIndex``
gives its NVML index for the rows' ``device`` column."""

from __future__ import annotations

from typing import Any

try:
    import pynvml
except ImportError:  # the CPU twin must still work without nvidia-ml-py
    pynvml = None  # type: ignore[assignment]

from harness.errors import UsageError


def device_handles(
    requested: list[int] | None, uuids: list[str] | None, errors: list[str]
) -> tuple[list[tuple[int, Any]], str | None]:
    """([(NVML index, handle)], None), or ([], the reason NVML is unusable) after ``nvmlInit``.
    A device that fails to open is appended to ``errors`` and skipped; an NVML index outside this
    node's devices is a UsageError."""
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as e:
        return [], f"nvmlDeviceGetCount: {e}"
    if count == 0:
        return [], "no devices"
    out: list[tuple[int, Any]] = []
    if uuids is not None:
        for uuid in uuids:
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                out.append((int(pynvml.nvmlDeviceGetIndex(handle)), handle))
            except pynvml.NVMLError as e:
                errors.append(f"device {uuid}: nvmlDeviceGetHandleByUUID: {e}")
        return out, None if out else f"no NVML device has the UUID(s) {', '.join(uuids)}"
    indices = list(range(count)) if requested is None else requested
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise UsageError(
            f"nvml.devices: {bad} not in 0..{count - 1}; pass NVML indices of this node's GPUs"
        )
    for i in indices:
        try:
            out.append((i, pynvml.nvmlDeviceGetHandleByIndex(i)))
        except pynvml.NVMLError as e:
            errors.append(f"device {i}: nvmlDeviceGetHandleByIndex: {e}")
    return out, None


def device_names(indices: list[int]) -> list[str]:
    """NVML's name of each device (e.g. "NVIDIA H100 80GB HBM3"); [] where NVML cannot say."""
    if pynvml is None or not indices:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        names = []
        for i in indices:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except pynvml.NVMLError:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
