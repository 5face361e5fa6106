"""Pure summaries of the sampler's rows (``summarize_nvml``) and this rank's peak memory
(``torch_memory_stats``, one read on demand); no background sampling here.
"""

from __future__ import annotations

import resource
import sys
from typing import Any, Iterable

from harness.errors import UsageError
from harness.measure import host
from harness.measure.nvml_fields import GPM_COLUMNS as _GPM_COLUMNS


def torch_memory_stats(device: Any) -> dict:
    """Peak memory of this rank, the same keys on CUDA and CPU.

    CUDA (``source = "torch.cuda"``): ``max_memory_allocated_bytes`` and
    ``max_memory_reserved_bytes`` are torch's caching-allocator peaks on that device.
    CPU (``source = "process"``): those two are None; ``peak_rss_bytes`` is the whole
    process's peak resident set (``max(getrusage(RUSAGE_SELF).ru_maxrss, current RSS)``), which
    counts Python, libraries and tensors alike, not torch's allocator alone.
    ``peak_rss_bytes`` and ``rss_bytes`` are filled on both paths.  torch is imported only
    when a CUDA device is asked for, so the CPU path never needs CUDA.
    """
    if isinstance(device, bool):
        raise UsageError(
            f"torch_memory_stats.device: {device!r} is not a device; use 'cpu', 'cuda:0' or an int"
        )
    if isinstance(device, int):
        kind = "cuda"
    elif isinstance(device, str) or hasattr(device, "type"):
        kind = getattr(device, "type", None) or str(device).split(":")[0]
    else:
        raise UsageError(
            f"torch_memory_stats.device: {device!r} is not a device; use 'cpu', 'cuda:0' or an int"
        )
    out = {
        "source": "process",
        "device": str(device),
        "label": "process peak RSS (whole process, not torch's allocator)",
        "max_memory_allocated_bytes": None,
        "max_memory_reserved_bytes": None,
    }
    rss = host.process().rss_bytes()
    # the kernel updates ru_maxrss lazily, so it can trail the current RSS by a few pages
    out["peak_rss_bytes"], out["rss_bytes"] = max(_peak_rss_bytes(), rss), rss
    if kind == "cuda":
        import torch  # only here: the CPU path must not pay for (or need) CUDA

        if torch.cuda.is_available():
            out.update(
                source="torch.cuda",
                label="torch CUDA caching allocator peaks on this device",
                max_memory_allocated_bytes=int(torch.cuda.max_memory_allocated(device)),
                max_memory_reserved_bytes=int(torch.cuda.max_memory_reserved(device)),
            )
        else:
            out["label"] += "; CUDA was asked for but is not available"
    return out


def reset_peak_memory(device: Any) -> None:
    """Start torch's CUDA allocator peaks afresh on ``device`` (a rank calls it once its weights
    and KV cache are allocated, so the reported peak is the serving peak, not the transient spike
    of building the weights). The CPU's process peak RSS cannot be reset: a no-op there."""
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_nvml(rows: Iterable[dict]) -> dict[int, dict]:
    """Per-device summary of sampler rows (pure; rows may come from a results file).

    For device d with rows sorted by ``t_s``; each statistic uses only rows where its column
    is not None, and is None when there are none:
      samples                     = number of rows
      elapsed_s                   = t_s[last] - t_s[first]
      peak_mem_used_bytes         = max(mem_used_bytes)
      mean_gpu_util_pct           = sum(gpu_util_pct) / count      (samples are equally spaced,
      mean_power_w                = sum(power_w) / count            so this approximates the time
      mean) energy_j                    = sum(energy_delta_j)            (energy from first to last
      sample) mean_nvlink_tx_bytes_per_s  = sum(nvlink_tx_delta_bytes) / elapsed_s   (None if
      elapsed_s == 0) mean_nvlink_rx_bytes_per_s  = sum(nvlink_rx_delta_bytes) / elapsed_s
      mean_gpm_sm_occupancy_pct, mean_gpm_dram_bw_util_pct, mean_gpm_nvlink_tx_bytes_per_s,
      mean_gpm_nvlink_rx_bytes_per_s = sum(x) / count peak_rss_bytes              = max(rss_bytes)
                    (CPU twin rows, device -1)
      mean_cpu_pct                = sum(cpu_pct) / count
    """
    by_dev: dict[int, list[dict]] = {}
    for i, r in enumerate(rows):
        for key in ("t_s", "device"):
            if r.get(key) is None:
                raise UsageError(
                    f"nvml rows[{i}].{key}: missing; rows must come from NvmlSampler.rows()"
                )
        by_dev.setdefault(int(r["device"]), []).append(r)
    out: dict[int, dict] = {}
    for dev, rs in sorted(by_dev.items()):
        rs.sort(key=lambda r: r["t_s"])

        def col(name: str) -> list:
            return [r[name] for r in rs if r.get(name) is not None]

        elapsed = rs[-1]["t_s"] - rs[0]["t_s"]
        summary: dict[str, Any] = {
            "samples": len(rs),
            "elapsed_s": elapsed,
            "peak_mem_used_bytes": max(col("mem_used_bytes"), default=None),
            "mean_gpu_util_pct": _mean(col("gpu_util_pct")),
            "mean_power_w": _mean(col("power_w")),
            "energy_j": sum(col("energy_delta_j")) if col("energy_delta_j") else None,
        }
        for d in ("tx", "rx"):
            deltas = col(f"nvlink_{d}_delta_bytes")
            summary[f"mean_nvlink_{d}_bytes_per_s"] = (
                sum(deltas) / elapsed if deltas and elapsed > 0 else None
            )
        for c in _GPM_COLUMNS:
            summary[f"mean_{c}"] = _mean(col(c))
        summary["peak_rss_bytes"] = max(col("rss_bytes"), default=None)
        summary["mean_cpu_pct"] = _mean(col("cpu_pct"))
        out[dev] = summary
    return out


def summarize_nvml_by_node(rows: Iterable[dict]) -> dict[tuple[str, int], dict]:
    """``summarize_nvml`` per (node, device) of GPU rows (device >= 0): an NVML index names a GPU on
    its own node only, so device 0 of two nodes is two GPUs, each with its own rates (``node`` as
    the results' nvml table writes it; rows without one count as one node)."""
    by_node: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("device") is not None and int(r["device"]) >= 0:
            by_node.setdefault(str(r.get("node") or ""), []).append(r)
    return {
        (node, dev): d
        for node, rs in sorted(by_node.items())
        for dev, d in summarize_nvml(rs).items()
    }
