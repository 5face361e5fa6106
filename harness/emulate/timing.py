"""The local device's own ceilings and the clock every emulated point is timed with.

Timing rule: warm-up excluded, device synced before every clock read; a point is the median of
N iterations, a ceiling the fastest of N (``Peaks``)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from harness.spec.catalog import GPU_CATALOG, GpuSpec, catalog_key_for_device

WARMUP = 2  # eager iterations before timing (and before graph capture)


@dataclass
class Peaks:
    """The device's ceilings, each the FASTEST of ``iters`` timings after warm-up (interference only
    ever slows a run down, so the fastest is the best estimate of what the device can do; a
    point's step time is the median): copy_gbps = 2·bytes / t (a device-to-device copy reads and
    writes each byte), of a buffer far larger than the last-level cache; matmul_tflops = 2·n³ / t,
    the best over the sizes tried (``matmul_n`` the size that gave it).

    ``raise_to_points`` then lifts a ceiling that a measured point beat (a point's rate is a
    measurement of what the device does too), so no point shows more than 100 % of a ceiling;
    ``notes`` says which point and by how much (``*_measured`` keep the ceilings' own values)."""

    device: str
    copy_gbps: float
    copy_bytes: int
    matmul_tflops: float
    matmul_n: int
    matmul_dtype: str
    iters: int
    copy_gbps_measured: float | None = None
    matmul_tflops_measured: float | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.copy_gbps_measured is None:
            self.copy_gbps_measured = self.copy_gbps
        if self.matmul_tflops_measured is None:
            self.matmul_tflops_measured = self.matmul_tflops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Median wall time of ``fn`` over ``iters`` calls; the device is synced before every clock
    read."""
    return statistics.median(_times(fn, device, iters))


def time_best(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Fastest wall time of ``fn`` over ``iters`` calls (for ceilings), synced as
    ``time_median``."""
    return min(_times(fn, device, iters))


def _times(fn: Callable[[], object], device: torch.device, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


# GPU: a 2 GiB copy and 8192³ products. CPU: a 512 MiB copy (16x this host's 32 MiB L3: a smaller
# buffer times the cache, not memory) and the best of 512³ and 1024³ products, each the fastest
# of N: on a shared host a short product is the one that finds the process holding its cores
# (one 2048³ product is interrupted nearly always, so its rate is the neighbours', not the CPU's).
_GPU_SIZES = (2 * 2**30, (8192,), 4)
_CPU_SIZES = (512 * 2**20, (512, 1024), 1)


def measure_peaks(device: torch.device, dtype: torch.dtype, iters: int = 10) -> Peaks:
    """The device's copy bandwidth and matmul peak in ``dtype`` (see ``Peaks``); CPU figures are
    the CPU's own, labelled so by the caller."""
    nbytes, sizes, reps = _GPU_SIZES if device.type == "cuda" else _CPU_SIZES
    iters = max(iters, 10)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy_t = time_best(lambda: dst.copy_(src), device, iters)  # noqa: F821
    del src, dst
    best = (0.0, sizes[0])
    for n in sizes:
        # random data: zeros run faster than real work
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)

        def products():
            for _ in range(reps):
                torch.matmul(a, b)  # noqa: F821

        for _ in range(3):
            products()
        rate = 2 * n**3 / (time_best(products, device, iters) / reps) / 1e12
        best = max(best, (rate, n))
        del a, b
    return Peaks(
        device_name(device),
        2 * nbytes / copy_t / 1e9,
        nbytes,
        best[0],
        best[1],
        str(dtype).replace("torch.", ""),
        iters,
    )


def raise_to_points(peaks: Peaks, points: list) -> None:
    """Lift each ceiling to the best rate a measured point reached where that beats it, with a
    note, then set every point's ``copy_frac``/``peak_frac`` against the (final) ceilings."""
    timed = [p for p in points if p.step_s]
    for attr, rate, label in (
        ("copy_gbps", "gbps", "copy bandwidth"),
        ("matmul_tflops", "tflops", "matmul peak"),
    ):
        top = max(timed, key=lambda p: getattr(p, rate), default=None)
        if top is not None and getattr(top, rate) > getattr(peaks, attr):
            peaks.notes.append(
                f"{label} raised from {getattr(peaks, attr):.4g} to {getattr(top, rate):.4g} "
                f"({'GB/s' if rate == 'gbps' else 'TFLOP/s'}): the {top.phase} point B={top.batch} "
                f"T={top.tokens} ctx={top.context} went faster than the ceiling measurement"
            )
            setattr(peaks, attr, getattr(top, rate))
    for p in timed:
        p.copy_frac, p.peak_frac = p.gbps / peaks.copy_gbps, p.tflops / peaks.matmul_tflops


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def catalog_gpu_for(name: str) -> GpuSpec | None:
    """The catalogue entry of a device named ``name`` ("CPU", "NVIDIA H200", ...), or None when
    the catalogue does not describe that part (an H100 PCIe or NVL is not the SXM part)."""
    key = catalog_key_for_device(name)
    return GPU_CATALOG[key] if key else None
