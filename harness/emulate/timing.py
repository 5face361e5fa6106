"""The local device's own ceilings and the clock every emulated point is timed with.

Timing rule (each point and each ceiling): warm-up excluded, device synced before every clock
read, the median of N iterations taken.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from harness.spec.catalog import GPU_CATALOG, GpuSpec

WARMUP = 2                        # eager iterations before timing (and before graph capture)


@dataclass
class Peaks:
    """copy_gbps = 2·bytes / t (a device-to-device copy reads and writes each byte);
    matmul_tflops = 2·n³ / t; both the median of ``iters`` timings after warm-up."""

    device: str
    copy_gbps: float
    copy_bytes: int
    matmul_tflops: float
    matmul_n: int
    matmul_dtype: str
    iters: int


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Median wall time of ``fn`` over ``iters`` calls; the device is synced before every clock read."""
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_peaks(device: torch.device, dtype: torch.dtype, iters: int = 10) -> Peaks:
    """GPU: a 2 GiB copy and an 8192³ product; CPU: 32 MiB and 512³ (CPU figures, labelled so)."""
    cuda = device.type == "cuda"
    nbytes, n, reps = (2 * 2**30, 8192, 4) if cuda else (32 * 2**20, 512, 1)
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy_t = time_median(lambda: dst.copy_(src), device, max(iters, 10))
    del src, dst
    a = torch.randn(n, n, device=device).to(dtype)   # random data: zeros run faster than real work
    b = torch.randn(n, n, device=device).to(dtype)

    def products():
        for _ in range(reps):
            torch.matmul(a, b)

    for _ in range(3):
        products()
    mm_t = time_median(products, device, max(iters, 10)) / reps
    del a, b
    return Peaks(device_name(device), 2 * nbytes / copy_t / 1e9, nbytes, 2 * n**3 / mm_t / 1e12, n,
                 str(dtype).replace("torch.", ""), max(iters, 10))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def catalog_gpu_for(name: str) -> GpuSpec | None:
    """The catalogue entry of a device named ``name`` ("CPU", "NVIDIA H200", ...), or None."""
    low = name.lower()
    if low == "cpu":
        return GPU_CATALOG["cpu"]
    for key in ("h200", "h100", "a100"):
        if key in low:
            return next(g for k, g in GPU_CATALOG.items() if k.lower().startswith(key))
    return None
