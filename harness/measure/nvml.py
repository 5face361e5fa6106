"""GPU telemetry sampler (NVML), its CPU twin (psutil), and pure summaries of its rows.

One background thread samples every ``interval_s``; ``start()`` takes a baseline sample and
``stop()`` joins the thread and takes a final one, so the rows cover the whole window.
Each sample pass yields one row per device with the columns in ``COLUMNS``.

Units (raw NVML value → column):
  memory bytes → ``mem_*_bytes`` as is;  power mW → ``power_w = mW / 1000``;
  energy counter mJ → ``energy_j = mJ / 1000``;
  NVLink throughput counters KiB → ``nvlink_*_bytes = KiB * 1024``;
  GPM NVLink rates MiB/s → ``gpm_nvlink_*_bytes_per_s = MiB/s * 2**20``.

A field the device does not support (any ``NVMLError`` from its call, or a per-field error
code) is recorded once in ``unsupported`` and never asked for again; its column stays None.
When NVML cannot start (no library, no driver, no devices) the sampler records
``note = "NVML unavailable: <reason>"`` and samples this process instead (device = -1), so
the same table exists on a CPU machine.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import psutil

try:
    import pynvml
except ImportError:  # the CPU twin must still work without nvidia-ml-py
    pynvml = None  # type: ignore[assignment]

from harness.errors import UsageError

GPU_COLUMNS = (
    "mem_used_bytes", "mem_total_bytes", "gpu_util_pct", "mem_util_pct", "power_w",
    "energy_j", "energy_delta_j", "sm_clock_mhz", "temperature_c", "throttle_reasons",
    "nvlink_tx_bytes", "nvlink_rx_bytes", "nvlink_tx_delta_bytes", "nvlink_rx_delta_bytes",
    "gpm_sm_occupancy_pct", "gpm_dram_bw_util_pct",
    "gpm_nvlink_tx_bytes_per_s", "gpm_nvlink_rx_bytes_per_s",
)
HOST_COLUMNS = ("rss_bytes", "cpu_pct", "sys_mem_used_bytes")
COLUMNS = ("t_s", "device") + GPU_COLUMNS + HOST_COLUMNS

HOST_DEVICE = -1
ALL_LINKS = 0xFFFFFFFF  # NVML field scopeId meaning "sum over every NVLink"
KIB = 1024
MIB = 1024 * 1024

# (column, pynvml field-id constant name) for the cumulative NVLink data counters (KiB).
_NVLINK_FIELDS = (
    ("nvlink_tx_bytes", "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX"),
    ("nvlink_rx_bytes", "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX"),
)
# (column, pynvml GPM metric constant name, scale from NVML unit to column unit).
_GPM_METRICS = (
    ("gpm_sm_occupancy_pct", "NVML_GPM_METRIC_SM_OCCUPANCY", 1.0),
    ("gpm_dram_bw_util_pct", "NVML_GPM_METRIC_DRAM_BW_UTIL", 1.0),
    ("gpm_nvlink_tx_bytes_per_s", "NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC", float(MIB)),
    ("gpm_nvlink_rx_bytes_per_s", "NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC", float(MIB)),
)
_GPM_COLUMNS = tuple(c for c, _, _ in _GPM_METRICS)
_FIELD_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def counter_delta(prev: int | None, cur: int | None) -> int | None:
    """Increase of a cumulative counter between two reads.

    ``delta = cur - prev`` when ``cur >= prev``.  When ``cur < prev`` the counter was reset
    (driver reload, counters cleared) or wrapped; what was counted since then is ``cur``, so
    ``delta = cur``.  None when either read is missing (first sample, unsupported field).
    """
    if prev is None or cur is None:
        return None
    return cur - prev if cur >= prev else cur


# Scalar readers: one NVML call each → values for their columns, already in column units.
def _read_memory(h: Any) -> tuple:
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    return int(m.used), int(m.total)


def _read_utilization(h: Any) -> tuple:
    u = pynvml.nvmlDeviceGetUtilizationRates(h)
    return float(u.gpu), float(u.memory)


def _read_power(h: Any) -> tuple:
    return (pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,)  # mW → W


def _read_sm_clock(h: Any) -> tuple:
    return (int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),)


def _read_temperature(h: Any) -> tuple:
    return (int(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),)


def _read_throttle(h: Any) -> tuple:
    # CUDA 12.2 renamed "throttle reasons" to "clocks event reasons"; old drivers lack the new call.
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if fn is not None:
        try:
            return (int(fn(h)),)
        except pynvml.NVMLError_FunctionNotFound:
            pass
    return (int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)),)


_SCALAR_READERS: tuple[tuple[tuple[str, ...], Callable[[Any], tuple]], ...] = (
    (("mem_used_bytes", "mem_total_bytes"), _read_memory),
    (("gpu_util_pct", "mem_util_pct"), _read_utilization),
    (("power_w",), _read_power),
    (("sm_clock_mhz",), _read_sm_clock),
    (("temperature_c",), _read_temperature),
    (("throttle_reasons",), _read_throttle),
)


@dataclass
class _Device:
    """Per-device state kept between passes (handles, last counter reads, GPM buffers)."""

    index: int
    handle: Any
    readers: list = field(default_factory=lambda: list(_SCALAR_READERS))
    energy_ok: bool = True
    nvlink: list[tuple[str, int]] = field(default_factory=list)  # (column, field id) still asked
    prev: dict[str, int] = field(default_factory=dict)  # raw counter reads (mJ, KiB)
    gpm_metrics: list[tuple[str, int, float]] = field(default_factory=list)
    gpm_get: Any = None  # one c_nvmlGpmMetricsGet_t reused for every pass
    gpm_samples: list = field(default_factory=list)  # [previous, current] NVML sample buffers
    gpm_have_prev: bool = False


class NvmlSampler:
    """Background sampler of NVML device telemetry, or of this process when NVML is absent.

    ``devices`` are NVML indices on this node (None: all).  ``clock`` stamps ``t_s`` (one read
    per pass, shared by that pass's rows); the thread's schedule uses ``time.monotonic``.
    Counters: ``passes`` = sample passes taken (baseline + ``loop_iterations`` + final).
    """

    def __init__(self, interval_s: float = 0.1, devices: list[int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise UsageError(f"nvml.interval_s: {interval_s!r} must be > 0 seconds, e.g. 0.1")
        self.interval_s = float(interval_s)
        self._requested = None if devices is None else [int(d) for d in devices]
        self._clock = clock
        self.note: str | None = None
        self.errors: list[str] = []
        self.passes = 0
        self.loop_iterations = 0
        self._devices: list[_Device] = []
        self._unsupported: dict[tuple[int, str], str] = {}
        self._rows: list[tuple] = []  # tuples, not dicts: about a fifth of the memory per row
        self._rows_lock = threading.Lock()
        self._pass_lock = threading.Lock()  # one pass at a time: counter state stays consistent
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._nvml_open = False
        self._proc: psutil.Process | None = None

    # ---- public API -------------------------------------------------------------------
    @property
    def using_nvml(self) -> bool:
        return bool(self._devices)

    @property
    def unsupported(self) -> dict[str, str]:
        """Column → reason, first device that reported it (see ``unsupported_by_device``)."""
        out: dict[str, str] = {}
        for (dev, col), reason in dict(self._unsupported).items():  # copy: the thread may add
            out.setdefault(col, f"device {dev}: {reason}")
        return out

    @property
    def unsupported_by_device(self) -> dict[tuple[int, str], str]:
        return dict(self._unsupported)

    def start(self) -> "NvmlSampler":
        with self._pass_lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError("NvmlSampler.start: a sampler runs once; make a new one")
            self._open()
            self._sample_pass()  # baseline, so counter deltas cover the whole window
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Join the thread, take the final sample, release NVML.  Idempotent."""
        if self._thread is None or self._stopped:
            return
        self._stop_evt.set()
        self._thread.join()
        with self._pass_lock:
            try:
                if not self.errors:
                    self._sample_pass()
            finally:
                self._close()
                self._stopped = True

    def sample(self) -> None:
        """Take one pass now (between start and stop), e.g. at a phase boundary."""
        with self._pass_lock:
            if self._thread is None or self._stopped:
                raise RuntimeError("NvmlSampler.sample: call start() first")
            self._sample_pass()

    def rows(self) -> list[dict]:
        """A snapshot of every row so far, as plain dicts keyed by ``COLUMNS``; safe while running."""
        with self._rows_lock:
            snapshot = list(self._rows)
        return [dict(zip(COLUMNS, r)) for r in snapshot]

    def __enter__(self) -> "NvmlSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle --------------------------------------------------------------------
    def _open(self) -> None:
        reason = self._open_nvml()
        if reason is not None:
            self.note = f"NVML unavailable: {reason}"
            self._proc = psutil.Process()
            self._proc.cpu_percent(None)  # first call only primes psutil's CPU-time baseline

    def _open_nvml(self) -> str | None:
        """Init NVML and take handles; the reason it is unusable, or None on success."""
        if pynvml is None:
            return "nvidia-ml-py (pynvml) is not installed"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            return str(e)
        self._nvml_open = True
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            self._close()
            return f"nvmlDeviceGetCount: {e}"
        if count == 0:
            self._close()
            return "no devices"
        indices = list(range(count)) if self._requested is None else self._requested
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            self._close()
            raise UsageError(f"nvml.devices: {bad} not in 0..{count - 1}; pass NVML indices of this node's GPUs")
        for i in indices:
            try:
                dev = _Device(index=i, handle=pynvml.nvmlDeviceGetHandleByIndex(i))
            except pynvml.NVMLError as e:
                self.errors.append(f"device {i}: nvmlDeviceGetHandleByIndex: {e}")
                continue
            self._setup_nvlink(dev)
            self._setup_gpm(dev)
            self._devices.append(dev)
        if not self._devices:
            self._close()
            return "no device handle could be opened"
        return None

    def _close(self) -> None:
        for dev in self._devices:
            self._free_gpm(dev)
        if self._nvml_open:
            self._nvml_open = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass  # nothing left to release

    def _run(self) -> None:
        next_t = time.monotonic() + self.interval_s
        try:
            # a deadline schedule keeps the period at interval_s however long a pass takes
            while not self._stop_evt.wait(max(0.0, next_t - time.monotonic())):
                next_t += self.interval_s
                with self._pass_lock:
                    self._sample_pass()
                    self.loop_iterations += 1
        except Exception as e:  # a sampler bug must not kill the run it measures; keep the reason
            self.errors.append(f"sampler thread stopped: {type(e).__name__}: {e}")

    # ---- sampling ---------------------------------------------------------------------
    def _mark(self, dev: _Device, columns: Iterable[str], reason: str) -> None:
        for col in columns:
            self._unsupported.setdefault((dev.index, col), reason)

    def _sample_pass(self) -> None:
        t = float(self._clock())
        if self._devices:
            batch = [self._sample_device(dev, t) for dev in self._devices]
        else:
            batch = [self._sample_host(t)]
        with self._rows_lock:
            self._rows.extend(batch)  # a whole pass at once: a snapshot never holds half a pass
        self.passes += 1

    def _sample_host(self, t: float) -> tuple:
        row = dict.fromkeys(COLUMNS)
        row["t_s"], row["device"] = t, HOST_DEVICE
        row["rss_bytes"] = int(self._proc.memory_info().rss)
        row["cpu_pct"] = float(self._proc.cpu_percent(None))
        row["sys_mem_used_bytes"] = int(psutil.virtual_memory().used)
        return tuple(row.values())

    def _sample_device(self, dev: _Device, t: float) -> tuple:
        row = dict.fromkeys(COLUMNS)
        row["t_s"], row["device"] = t, dev.index
        for entry in list(dev.readers):
            columns, read = entry
            try:
                row.update(zip(columns, read(dev.handle)))
            except pynvml.NVMLError as e:
                self._mark(dev, columns, str(e))
                dev.readers.remove(entry)
        self._sample_energy(dev, row)
        self._sample_nvlink(dev, row)
        self._sample_gpm(dev, row)
        return tuple(row.values())

    def _sample_energy(self, dev: _Device, row: dict) -> None:
        if not dev.energy_ok:
            return
        try:
            mj = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(dev.handle))
        except pynvml.NVMLError as e:
            self._mark(dev, ("energy_j",), str(e))
            dev.energy_ok = False
            return
        delta = counter_delta(dev.prev.get("energy_j"), mj)
        dev.prev["energy_j"] = mj
        row["energy_j"] = mj / 1000.0
        row["energy_delta_j"] = None if delta is None else delta / 1000.0

    def _setup_nvlink(self, dev: _Device) -> None:
        for col, const in _NVLINK_FIELDS:
            fid = getattr(pynvml, const, None)
            if fid is None:
                self._mark(dev, (col,), f"pynvml lacks {const}")
            else:
                dev.nvlink.append((col, fid))

    def _sample_nvlink(self, dev: _Device, row: dict) -> None:
        if not dev.nvlink:
            return
        try:
            values = pynvml.nvmlDeviceGetFieldValues(dev.handle, [(fid, ALL_LINKS) for _, fid in dev.nvlink])
        except pynvml.NVMLError as e:
            self._mark(dev, [c for c, _ in dev.nvlink], str(e))
            dev.nvlink = []
            return
        keep = []
        for (col, fid), fv in zip(dev.nvlink, values):
            if fv.nvmlReturn != pynvml.NVML_SUCCESS:
                self._mark(dev, (col,), str(pynvml.NVMLError(fv.nvmlReturn)))
                continue
            keep.append((col, fid))
            kib = int(getattr(fv.value, _FIELD_VALUE_MEMBER.get(fv.valueType, "ullVal")))
            delta = counter_delta(dev.prev.get(col), kib)
            dev.prev[col] = kib
            row[col] = kib * KIB
            row[col.replace("_bytes", "_delta_bytes")] = None if delta is None else delta * KIB
        dev.nvlink = keep

    def _setup_gpm(self, dev: _Device) -> None:
        if not hasattr(pynvml, "nvmlGpmQueryDeviceSupport"):
            self._mark(dev, _GPM_COLUMNS, "pynvml has no GPM API")
            return
        try:
            if not pynvml.nvmlGpmQueryDeviceSupport(dev.handle).isSupportedDevice:
                self._mark(dev, _GPM_COLUMNS, "GPM not supported on this device")
                return
            for _ in range(2):  # one by one, so a failed second alloc still frees the first
                dev.gpm_samples.append(pynvml.nvmlGpmSampleAlloc())
        except pynvml.NVMLError as e:
            self._mark(dev, _GPM_COLUMNS, f"GPM: {e}")
            self._free_gpm(dev)
            return
        for col, const, scale in _GPM_METRICS:
            mid = getattr(pynvml, const, None)
            if mid is None:
                self._mark(dev, (col,), f"pynvml lacks {const}")
            else:
                dev.gpm_metrics.append((col, mid, scale))
        dev.gpm_get = pynvml.c_nvmlGpmMetricsGet_t()  # ~19 KB, allocated once per device
        self._program_gpm(dev)

    def _program_gpm(self, dev: _Device) -> None:
        if not dev.gpm_metrics:
            self._free_gpm(dev)
            return
        mg = dev.gpm_get
        mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(dev.gpm_metrics)
        for i, (_, mid, _) in enumerate(dev.gpm_metrics):
            mg.metrics[i].metricId = mid

    def _free_gpm(self, dev: _Device) -> None:
        for s in dev.gpm_samples:
            try:
                pynvml.nvmlGpmSampleFree(s)
            except pynvml.NVMLError:
                pass  # freeing is best effort at shutdown
        dev.gpm_samples, dev.gpm_get, dev.gpm_metrics = [], None, []

    def _sample_gpm(self, dev: _Device, row: dict) -> None:
        if dev.gpm_get is None:
            return
        prev, cur = dev.gpm_samples
        try:
            pynvml.nvmlGpmSampleGet(dev.handle, cur)
            if dev.gpm_have_prev:
                mg = dev.gpm_get
                mg.sample1, mg.sample2 = prev, cur
                pynvml.nvmlGpmMetricsGet(mg)
        except pynvml.NVMLError as e:
            self._mark(dev, [c for c, _, _ in dev.gpm_metrics], f"GPM: {e}")
            self._free_gpm(dev)
            return
        if dev.gpm_have_prev:
            keep = []
            for i, metric in enumerate(dev.gpm_metrics):
                m = dev.gpm_get.metrics[i]
                if m.nvmlReturn != pynvml.NVML_SUCCESS:
                    self._mark(dev, (metric[0],), f"GPM: {pynvml.NVMLError(m.nvmlReturn)}")
                    continue
                keep.append(metric)
                row[metric[0]] = float(m.value) * metric[2]
            if len(keep) != len(dev.gpm_metrics):
                dev.gpm_metrics = keep
                self._program_gpm(dev)
                if dev.gpm_get is None:
                    return
        dev.gpm_samples = [cur, prev]  # this sample opens the next interval; reuse the old buffer
        dev.gpm_have_prev = True


def torch_memory_stats(device: Any) -> dict:
    """Peak memory of this rank, the same keys on CUDA and CPU.

    CUDA (``source = "torch.cuda"``): ``max_memory_allocated_bytes`` and
    ``max_memory_reserved_bytes`` are torch's caching-allocator peaks on that device.
    CPU (``source = "process"``): those two are None; ``peak_rss_bytes`` is the whole
    process's peak resident set (``max(getrusage(RUSAGE_SELF).ru_maxrss, current RSS)``), which counts
    Python, libraries and tensors alike, not torch's allocator alone.
    ``peak_rss_bytes`` and ``rss_bytes`` are filled on both paths.  torch is imported only
    when a CUDA device is asked for, so the CPU path never needs CUDA.
    """
    if isinstance(device, bool):
        raise UsageError(f"torch_memory_stats.device: {device!r} is not a device; use 'cpu', 'cuda:0' or an int")
    if isinstance(device, int):
        kind = "cuda"
    elif isinstance(device, str) or hasattr(device, "type"):
        kind = getattr(device, "type", None) or str(device).split(":")[0]
    else:
        raise UsageError(f"torch_memory_stats.device: {device!r} is not a device; use 'cpu', 'cuda:0' or an int")
    out = {
        "source": "process",
        "device": str(device),
        "label": "process peak RSS (whole process, not torch's allocator)",
        "max_memory_allocated_bytes": None,
        "max_memory_reserved_bytes": None,
    }
    rss = int(psutil.Process().memory_info().rss)
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
      mean_power_w                = sum(power_w) / count            so this approximates the time mean)
      energy_j                    = sum(energy_delta_j)            (energy from first to last sample)
      mean_nvlink_tx_bytes_per_s  = sum(nvlink_tx_delta_bytes) / elapsed_s   (None if elapsed_s == 0)
      mean_nvlink_rx_bytes_per_s  = sum(nvlink_rx_delta_bytes) / elapsed_s
      mean_gpm_sm_occupancy_pct, mean_gpm_dram_bw_util_pct,
      mean_gpm_nvlink_tx_bytes_per_s, mean_gpm_nvlink_rx_bytes_per_s = sum(x) / count
      peak_rss_bytes              = max(rss_bytes)                 (CPU twin rows, device -1)
      mean_cpu_pct                = sum(cpu_pct) / count
    """
    by_dev: dict[int, list[dict]] = {}
    for i, r in enumerate(rows):
        for key in ("t_s", "device"):
            if r.get(key) is None:
                raise UsageError(f"nvml rows[{i}].{key}: missing; rows must come from NvmlSampler.rows()")
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
            summary[f"mean_nvlink_{d}_bytes_per_s"] = sum(deltas) / elapsed if deltas and elapsed > 0 else None
        for c in _GPM_COLUMNS:
            summary[f"mean_{c}"] = _mean(col(c))
        summary["peak_rss_bytes"] = max(col("rss_bytes"), default=None)
        summary["mean_cpu_pct"] = _mean(col("cpu_pct"))
        out[dev] = summary
    return out
