"""GPU telemetry sampler (NVML) and its CPU twin (this process: psutil, or /proc without it).

One background thread samples every ``interval_s``; ``start()`` takes a baseline sample and
``stop()`` joins the thread and takes a final one, so the rows cover the whole window.
Each sample pass yields one row per device with the columns in ``COLUMNS``.

Columns, units and the NVML reads behind them: ``harness.measure.nvml_fields``. Summaries
of the rows and ``torch_memory_stats``: ``harness.measure.nvml_summary`` (re-exported here).

A field the device does not support (any ``NVMLError`` from its call, or a per-field error
code) is recorded once in ``unsupported`` and never asked for again; its column stays None.
When NVML cannot start (no library, no driver, no devices) the sampler records
``note = "NVML unavailable: <reason>"`` and samples this process instead (device = -1), so
the same table exists on a CPU machine."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

try:
    import pynvml
except ImportError:  # the CPU twin must still work without nvidia-ml-py
    pynvml = None  # type: ignore[assignment]

from harness.errors import UsageError
from harness.measure import host
from harness.measure.nvml_devices import device_handles
from harness.measure.nvml_fields import (
    ALL_LINKS,
    COLUMNS,
    GPU_COLUMNS,
    HOST_COLUMNS,
    HOST_DEVICE,
    KIB,
    MIB,
    counter_delta,
)
from harness.measure.nvml_fields import FIELD_VALUE_MEMBER as _FIELD_VALUE_MEMBER
from harness.measure.nvml_fields import GPM_COLUMNS as _GPM_COLUMNS
from harness.measure.nvml_fields import GPM_METRICS as _GPM_METRICS
from harness.measure.nvml_fields import NVLINK_FIELDS as _NVLINK_FIELDS
from harness.measure.nvml_fields import SCALAR_READERS as _SCALAR_READERS
from harness.measure.nvml_summary import summarize_nvml, summarize_nvml_by_node, torch_memory_stats

__all__ = [
    "ALL_LINKS",
    "COLUMNS",
    "GPU_COLUMNS",
    "HOST_COLUMNS",
    "HOST_DEVICE",
    "KIB",
    "MIB",
    "NvmlSampler",
    "counter_delta",
    "summarize_nvml",
    "summarize_nvml_by_node",
    "torch_memory_stats",
]


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

    ``devices`` are NVML indices on this node (None: all); ``uuids`` name the devices instead, by
    the UUID CUDA reports for them (``harness.engines.reference.dist.device_uuid``), so that a job
    samples exactly the GPUs its ranks use whatever CUDA_VISIBLE_DEVICES or the CUDA device order
    did to the indices; an empty list samples no GPU (a CPU rank: this process instead). ``clock``
    stamps ``t_s`` (one read per pass, shared by that pass's rows); the thread's schedule uses
    ``time.monotonic``. Counters: ``passes`` = sample passes taken (baseline + ``loop_iterations`` +
    final)."""

    def __init__(
        self,
        interval_s: float = 0.1,
        devices: list[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        uuids: list[str] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise UsageError(f"nvml.interval_s: {interval_s!r} must be > 0 seconds, e.g. 0.1")
        if devices is not None and uuids is not None:
            raise UsageError("nvml: give devices (NVML indices) or uuids, not both")
        self.interval_s = float(interval_s)
        self._requested = None if devices is None else [int(d) for d in devices]
        self._uuids = None if uuids is None else [str(u) for u in uuids]
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
        self._proc: host.Proc | None = None
        self._cpu_mark: tuple[float, float] = (0.0, 0.0)  # (wall, CPU seconds) of the last pass

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
        """A snapshot of every row so far, as plain dicts keyed by ``COLUMNS``; safe while
        running."""
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
            self._proc = host.process()
            self._cpu_mark = (time.monotonic(), host.cpu_seconds())

    def _open_nvml(self) -> str | None:
        """Init NVML and take handles; the reason it is unusable, or None on success."""
        if self._uuids == []:
            return "this process uses no GPU"
        if pynvml is None:
            return "nvidia-ml-py (pynvml) is not installed"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            return str(e)
        self._nvml_open = True
        try:
            handles, reason = device_handles(self._requested, self._uuids, self.errors)
        except UsageError:
            self._close()
            raise
        for index, handle in handles:
            dev = _Device(index=index, handle=handle)
            self._setup_nvlink(dev)
            self._setup_gpm(dev)
            self._devices.append(dev)
        if reason is None and not self._devices:
            reason = "no device handle could be opened"
        if reason is not None:
            self._close()
        return reason

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
        row["rss_bytes"] = self._proc.rss_bytes()
        # CPU time since the previous pass over the wall time between them (100 = one core)
        wall, cpu = time.monotonic(), host.cpu_seconds()
        (wall0, cpu0), self._cpu_mark = self._cpu_mark, (wall, cpu)
        row["cpu_pct"] = 100.0 * (cpu - cpu0) / (wall - wall0) if wall > wall0 else 0.0
        row["sys_mem_used_bytes"] = host.sys_mem_used_bytes()
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
            values = pynvml.nvmlDeviceGetFieldValues(
                dev.handle, [(fid, ALL_LINKS) for _, fid in dev.nvlink]
            )
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
