"""NvmlSampler against a scripted fake NVML (no GPU needed), its psutil twin, and the summary."""

from __future__ import annotations

import ctypes
import itertools
import resource
import sys
import time
import types
from collections import Counter

import psutil
import pynvml
import pytest

from harness.errors import UsageError
from harness.measure import nvml as nv
from harness.measure.nvml import (
    COLUMNS,
    NvmlSampler,
    counter_delta,
    summarize_nvml,
    torch_memory_stats,
)

GIB = 1024**3
TX, RX = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX
OCC, DRAM = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
GPM_TX, GPM_RX = (
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC,
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC,
)


def _addr(p) -> int:
    return ctypes.cast(p, ctypes.c_void_p).value


class FakeNvml:
    """Scripted NVML: each getter returns the next value of its per-device sequence.

    A sequence element that is an exception instance is raised instead; the last element
    repeats once a sequence is exhausted.  ``calls`` counts every call by function name.
    """

    def __init__(self, n_devices: int = 1, **scripts):
        self.n = n_devices
        self.scripts = scripts  # name -> {device: [values]} or [values] for every device
        self.calls: Counter = Counter()
        self.pos: Counter = Counter()
        self.field_requests: list = []
        self.gpm_pairs: list = []
        self.gpm_alloc: list = []
        self.gpm_freed: list = []
        self.gpm_supported = True
        self.init_error = None
        self.shutdowns = 0

    def _next(self, name: str, dev: int):
        self.calls[name] += 1
        seq = self.scripts[name]
        seq = seq[dev] if isinstance(seq, dict) else seq
        k = self.pos[(name, dev)]
        self.pos[(name, dev)] += 1
        v = seq[min(k, len(seq) - 1)]
        if isinstance(v, BaseException):
            raise v
        return v

    def install(self, mp: pytest.MonkeyPatch) -> "FakeNvml":
        def init():
            self.calls["nvmlInit"] += 1
            if self.init_error is not None:
                raise self.init_error

        def shutdown():
            self.shutdowns += 1

        def mem(h):
            used = self._next("mem", h)
            return types.SimpleNamespace(used=used, total=80 * GIB, free=80 * GIB - used)

        def util(h):
            g, m = self._next("util", h)
            return types.SimpleNamespace(gpu=g, memory=m)

        def field_values(h, ids):
            self.calls["fields"] += 1
            self.field_requests.append(list(ids))
            arr = (pynvml.c_nvmlFieldValue_t * len(ids))()
            for i, (fid, scope) in enumerate(ids):
                v = self._next("tx" if fid == TX else "rx", h)
                arr[i].fieldId, arr[i].scopeId, arr[i].valueType = (
                    fid,
                    scope,
                    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
                )
                if isinstance(
                    v, tuple
                ):  # ("err", code): per-field failure inside a successful call
                    arr[i].nvmlReturn = v[1]
                else:
                    arr[i].value.ullVal = v
            return arr

        def gpm_support(h):
            self.calls["gpm_support"] += 1
            return types.SimpleNamespace(version=1, isSupportedDevice=int(self.gpm_supported))

        def gpm_alloc():
            p = ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())
            self.gpm_alloc.append(p)  # keep alive so addresses stay distinct
            return p

        def gpm_get(h, s):
            self.calls["gpm_sample"] += 1

        def gpm_metrics(mg):
            self.calls["gpm_metrics"] += 1
            assert mg.version == pynvml.NVML_GPM_METRICS_GET_VERSION
            self.gpm_pairs.append((_addr(mg.sample1), _addr(mg.sample2)))
            for i in range(mg.numMetrics):
                v = self._next(f"gpm{mg.metrics[i].metricId}", 0)
                if isinstance(v, tuple):
                    mg.metrics[i].nvmlReturn = v[1]
                else:
                    mg.metrics[i].nvmlReturn, mg.metrics[i].value = 0, v
            return mg

        def by_uuid(uuid):
            self.calls["by_uuid"] += 1
            prefix, _, i = str(uuid).rpartition("-")
            if prefix != "GPU-fake" or not i.isdigit() or int(i) >= self.n:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return int(i)

        fns = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: self.n,
            "nvmlDeviceGetHandleByIndex": lambda i: (
                i
            ),  # the handle is the index: the fake keys scripts by it
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetIndex": lambda h: h,
            "nvmlDeviceGetMemoryInfo": mem,
            "nvmlDeviceGetUtilizationRates": util,
            "nvmlDeviceGetPowerUsage": lambda h: self._next("power_mw", h),
            "nvmlDeviceGetTotalEnergyConsumption": lambda h: self._next("energy_mj", h),
            "nvmlDeviceGetClockInfo": lambda h, t: self._next(
                "sm_clock" if t == pynvml.NVML_CLOCK_SM else "bad", h
            ),
            "nvmlDeviceGetTemperature": lambda h, s: self._next("temp", h),
            "nvmlDeviceGetCurrentClocksEventReasons": lambda h: self._next("reasons", h),
            "nvmlDeviceGetFieldValues": field_values,
            "nvmlGpmQueryDeviceSupport": gpm_support,
            "nvmlGpmSampleAlloc": gpm_alloc,
            "nvmlGpmSampleGet": gpm_get,
            "nvmlGpmMetricsGet": gpm_metrics,
            "nvmlGpmSampleFree": lambda s: self.gpm_freed.append(_addr(s)),
        }
        for name, fn in fns.items():
            mp.setattr(pynvml, name, fn)
        return self


def _defaults(**over):
    s = dict(
        mem=[10 * GIB, 12 * GIB, 11 * GIB],
        util=[(50, 20), (70, 30), (90, 40)],
        power_mw=[300_000, 450_500, 600_000],
        energy_mj=[1_000_000, 1_450_500, 1_900_000],
        sm_clock=[1980],
        temp=[60, 61, 62],
        reasons=[0, 4, 0],
        tx=[100, 300, 700],
        rx=[50, 50, 150],
        **{
            f"gpm{OCC}": [40.0, 60.0],
            f"gpm{DRAM}": [10.0, 30.0],
            f"gpm{GPM_TX}": [2.0, 4.0],
            f"gpm{GPM_RX}": [1.0, 0.5],
        },
    )
    s.update(over)
    return s


def ticking_clock(start=100.0, step=1.0):
    c = itertools.count()
    return lambda: start + step * next(c)


def run_passes(sampler: NvmlSampler, extra: int) -> list[dict]:
    """start (baseline) + ``extra`` explicit passes + stop (final); the thread never ticks (long
    interval)."""
    sampler.start()
    for _ in range(extra):
        sampler.sample()
    sampler.stop()
    return sampler.rows()


def test_counter_delta_increase_reset_and_missing():
    assert counter_delta(None, 5) is None
    assert counter_delta(5, None) is None
    assert counter_delta(100, 130) == 30
    assert counter_delta(100, 100) == 0
    assert counter_delta(100, 7) == 7  # reset: what was counted since is the new value


def test_units_deltas_and_gpm(monkeypatch):
    fake = FakeNvml(1, **_defaults()).install(monkeypatch)
    s = NvmlSampler(interval_s=60, clock=ticking_clock())
    rows = run_passes(s, extra=1)
    assert len(rows) == 3 and [r["t_s"] for r in rows] == [100.0, 101.0, 102.0]
    r0, r1, r2 = rows
    assert set(r0) == set(COLUMNS) and r0["device"] == 0
    assert [r["mem_used_bytes"] for r in rows] == [10 * GIB, 12 * GIB, 11 * GIB]
    assert r0["mem_total_bytes"] == 80 * GIB
    assert (r1["gpu_util_pct"], r1["mem_util_pct"]) == (70.0, 30.0)
    assert [r["power_w"] for r in rows] == [300.0, 450.5, 600.0]  # mW → W
    assert [r["energy_j"] for r in rows] == [1000.0, 1450.5, 1900.0]  # mJ → J
    assert [r["energy_delta_j"] for r in rows] == [None, 450.5, 449.5]
    assert r0["sm_clock_mhz"] == 1980 and r2["temperature_c"] == 62 and r1["throttle_reasons"] == 4
    assert [r["nvlink_tx_bytes"] for r in rows] == [
        100 * 1024,
        300 * 1024,
        700 * 1024,
    ]  # KiB → bytes
    assert [r["nvlink_tx_delta_bytes"] for r in rows] == [None, 200 * 1024, 400 * 1024]
    assert [r["nvlink_rx_delta_bytes"] for r in rows] == [None, 0, 100 * 1024]
    # all links
    assert all(ids == [(TX, 0xFFFFFFFF), (RX, 0xFFFFFFFF)] for ids in fake.field_requests)
    # GPM: the first pass only opens an interval; later passes read metrics over [prev, cur]
    assert r0["gpm_sm_occupancy_pct"] is None
    assert (r1["gpm_sm_occupancy_pct"], r2["gpm_sm_occupancy_pct"]) == (40.0, 60.0)
    assert (r1["gpm_dram_bw_util_pct"], r2["gpm_dram_bw_util_pct"]) == (10.0, 30.0)
    assert (
        r1["gpm_nvlink_tx_bytes_per_s"] == 2.0 * 2**20
        and r2["gpm_nvlink_rx_bytes_per_s"] == 0.5 * 2**20
    )
    # the buffers alternate: each interval starts where the previous one ended
    (a1, b1), (a2, b2) = fake.gpm_pairs
    assert a1 != b1 and (a2, b2) == (b1, a1)
    assert s.unsupported == {} and s.note is None and s.using_nvml
    assert (
        sorted(fake.gpm_freed) == sorted(_addr(p) for p in fake.gpm_alloc) and fake.shutdowns == 1
    )


def test_counter_reset_gives_new_value_as_delta(monkeypatch):
    FakeNvml(1, **_defaults(energy_mj=[5_000_000, 5_002_000, 1_500], tx=[1000, 1010, 3])).install(
        monkeypatch
    )
    rows = run_passes(NvmlSampler(interval_s=60, clock=ticking_clock()), extra=1)
    assert [r["energy_delta_j"] for r in rows] == [None, 2.0, 1.5]
    assert [r["nvlink_tx_delta_bytes"] for r in rows] == [None, 10 * 1024, 3 * 1024]


def test_unsupported_fields_recorded_once_never_retried(monkeypatch):
    fake = FakeNvml(
        2,
        **_defaults(
            temp={0: [pynvml.NVMLError_NotSupported()], 1: [55]},
            power_mw=[pynvml.NVMLError_NoPermission()],
            rx=[("err", pynvml.NVML_ERROR_NOT_SUPPORTED)],
            **{f"gpm{DRAM}": [("err", pynvml.NVML_ERROR_NOT_SUPPORTED)]},
        ),
    ).install(monkeypatch)
    s = NvmlSampler(interval_s=60, clock=ticking_clock())
    rows = run_passes(s, extra=3)  # 5 passes × 2 devices
    assert len(rows) == 10
    assert fake.calls["temp"] == 2 + 4  # device 0 asked once, device 1 every pass
    assert fake.calls["power_mw"] == 2  # once per device, then never again
    assert fake.calls["rx"] == 2 and fake.calls["tx"] == 10
    assert fake.field_requests[-1] == [(TX, 0xFFFFFFFF)]  # rx dropped from the request
    assert fake.calls[f"gpm{DRAM}"] == 2 and fake.calls[f"gpm{OCC}"] == 8
    assert s.unsupported_by_device[(0, "temperature_c")] == "Not Supported"
    assert (1, "temperature_c") not in s.unsupported_by_device
    assert s.unsupported["power_w"] == "device 0: Insufficient Permissions"
    assert s.unsupported["nvlink_rx_bytes"] == "device 0: Not Supported"
    assert s.unsupported["gpm_dram_bw_util_pct"] == "device 0: GPM: Not Supported"
    by_dev = {d: [r for r in rows if r["device"] == d] for d in (0, 1)}
    assert (
        all(r["temperature_c"] is None for r in by_dev[0]) and by_dev[1][-1]["temperature_c"] == 55
    )
    assert all(
        r["power_w"] is None and r["nvlink_rx_bytes"] is None and r["nvlink_rx_delta_bytes"] is None
        for r in rows
    )
    assert all(r["gpm_dram_bw_util_pct"] is None for r in rows)
    assert (
        by_dev[0][-1]["gpm_sm_occupancy_pct"] == 60.0
        and by_dev[0][-1]["nvlink_tx_bytes"] == 700 * 1024
    )


def test_gpm_unsupported_device_never_sampled(monkeypatch):
    fake = FakeNvml(1, **_defaults()).install(monkeypatch)
    fake.gpm_supported = False
    s = NvmlSampler(interval_s=60, clock=ticking_clock())
    rows = run_passes(s, extra=2)
    assert (
        fake.calls["gpm_support"] == 1
        and fake.calls["gpm_sample"] == 0
        and fake.calls["gpm_metrics"] == 0
    )
    assert s.unsupported["gpm_sm_occupancy_pct"] == "device 0: GPM not supported on this device"
    assert set(s.unsupported) == set(nv._GPM_COLUMNS)
    assert (
        all(r["gpm_nvlink_tx_bytes_per_s"] is None for r in rows) and rows[-1]["power_w"] == 600.0
    )


def test_thread_loses_no_sample_and_rows_safe_while_running(monkeypatch):
    FakeNvml(2, **_defaults()).install(monkeypatch)
    s = NvmlSampler(interval_s=0.001, clock=ticking_clock(start=0.0))
    snapshots = []
    with s:
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline and s.loop_iterations < 20:
            snapshots.append(len(s.rows()))
            time.sleep(0.002)
    assert s.loop_iterations >= 3
    assert s.passes == s.loop_iterations + 2  # baseline + loop + final
    rows = s.rows()
    assert len(rows) == 2 * s.passes
    for d in (0, 1):
        # the clock is read once per pass: consecutive ticks mean no pass was dropped or duplicated
        assert [r["t_s"] for r in rows if r["device"] == d] == [float(k) for k in range(s.passes)]
    assert all(n % 2 == 0 for n in snapshots)  # a snapshot never holds half a pass
    assert s.errors == []
    s.stop()  # idempotent
    assert len(s.rows()) == len(rows)
    with pytest.raises(RuntimeError):
        s.start()


def test_nvml_unavailable_falls_back_to_process(monkeypatch):
    fake = FakeNvml(1, **_defaults()).install(monkeypatch)
    fake.init_error = pynvml.NVMLError_LibraryNotFound()
    s = NvmlSampler(interval_s=60, clock=ticking_clock())
    rows = run_passes(s, extra=1)
    assert s.note == "NVML unavailable: NVML Shared Library Not Found" and not s.using_nvml
    assert len(rows) == 3 and all(set(r) == set(COLUMNS) for r in rows)
    rss_now = psutil.Process().memory_info().rss
    for r in rows:
        assert r["device"] == -1
        assert 0.5 * rss_now < r["rss_bytes"] < 2 * rss_now
        assert isinstance(r["cpu_pct"], float) and r["cpu_pct"] >= 0
        assert 0 < r["sys_mem_used_bytes"] <= psutil.virtual_memory().total
        assert all(r[c] is None for c in nv.GPU_COLUMNS)
    assert fake.calls["mem"] == 0 and fake.shutdowns == 0
    summary = summarize_nvml(rows)
    assert list(summary) == [-1] and summary[-1]["peak_rss_bytes"] == max(
        r["rss_bytes"] for r in rows
    )
    assert summary[-1]["peak_mem_used_bytes"] is None and summary[-1]["energy_j"] is None


def test_no_devices_falls_back_and_bad_index_is_usage_error(monkeypatch):
    fake = FakeNvml(0, **_defaults()).install(monkeypatch)
    s = NvmlSampler(interval_s=60)
    run_passes(s, extra=0)
    assert s.note == "NVML unavailable: no devices" and fake.shutdowns == 1
    fake.n = 2
    with pytest.raises(UsageError, match=r"nvml.devices: \[5\] not in 0..1"):
        NvmlSampler(devices=[0, 5]).start()
    with pytest.raises(UsageError, match="nvml.interval_s"):
        NvmlSampler(interval_s=0)


def test_device_subset(monkeypatch):
    FakeNvml(4, **_defaults()).install(monkeypatch)
    rows = run_passes(NvmlSampler(interval_s=60, devices=[1, 3]), extra=0)
    assert [r["device"] for r in rows] == [1, 3, 1, 3]


def test_summarize_nvml_hand_computed():
    def row(t, dev, **kw):
        r = dict.fromkeys(COLUMNS)
        r.update(t_s=t, device=dev, **kw)
        return r

    rows = [
        row(
            12.0,
            0,
            mem_used_bytes=300,
            gpu_util_pct=90.0,
            power_w=400.0,
            energy_delta_j=800.0,
            nvlink_tx_delta_bytes=6000,
            nvlink_rx_delta_bytes=1000,
            gpm_sm_occupancy_pct=50.0,
        ),
        row(10.0, 0, mem_used_bytes=100, gpu_util_pct=30.0, power_w=100.0),  # first: no deltas
        row(
            11.0,
            0,
            mem_used_bytes=500,
            gpu_util_pct=60.0,
            power_w=None,
            energy_delta_j=200.0,
            nvlink_tx_delta_bytes=2000,
            nvlink_rx_delta_bytes=0,
            gpm_sm_occupancy_pct=None,
        ),
        row(10.0, 1, mem_used_bytes=7, gpu_util_pct=None),
    ]
    s = summarize_nvml(rows)
    d0 = s[0]
    assert d0["samples"] == 3 and d0["elapsed_s"] == 2.0
    assert d0["peak_mem_used_bytes"] == 500
    assert d0["mean_gpu_util_pct"] == 60.0  # (30 + 60 + 90) / 3
    assert d0["mean_power_w"] == 250.0  # (100 + 400) / 2: the missing sample is skipped
    assert d0["energy_j"] == 1000.0  # 200 + 800
    assert d0["mean_nvlink_tx_bytes_per_s"] == 4000.0  # (2000 + 6000) / 2 s
    assert d0["mean_nvlink_rx_bytes_per_s"] == 500.0  # (0 + 1000) / 2 s
    assert d0["mean_gpm_sm_occupancy_pct"] == 50.0 and d0["mean_gpm_dram_bw_util_pct"] is None
    d1 = s[1]
    assert d1["samples"] == 1 and d1["elapsed_s"] == 0.0 and d1["peak_mem_used_bytes"] == 7
    assert d1["mean_gpu_util_pct"] is None and d1["mean_nvlink_tx_bytes_per_s"] is None
    with pytest.raises(UsageError, match=r"rows\[0\].device"):
        summarize_nvml([{"t_s": 1.0}])


def test_torch_memory_stats_cpu_needs_no_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would now fail
    st = torch_memory_stats("cpu")
    assert st["source"] == "process" and "peak RSS" in st["label"]
    assert st["max_memory_allocated_bytes"] is None and st["max_memory_reserved_bytes"] is None
    assert st["peak_rss_bytes"] >= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 * 0.99
    assert st["peak_rss_bytes"] >= st["rss_bytes"] > 0
    with pytest.raises(UsageError, match="torch_memory_stats.device"):
        torch_memory_stats(1.5)


def test_torch_memory_stats_cuda_reads_allocator_peaks(monkeypatch):
    asked = []
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        max_memory_allocated=lambda d: asked.append(("alloc", d)) or 3 * GIB,
        max_memory_reserved=lambda d: asked.append(("res", d)) or 4 * GIB,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    st = torch_memory_stats("cuda:1")
    assert st["source"] == "torch.cuda" and st["device"] == "cuda:1"
    assert (st["max_memory_allocated_bytes"], st["max_memory_reserved_bytes"]) == (3 * GIB, 4 * GIB)
    assert asked == [("alloc", "cuda:1"), ("res", "cuda:1")] and st["peak_rss_bytes"] > 0
    cuda.is_available = lambda: False
    st = torch_memory_stats(0)
    assert (
        st["source"] == "process"
        and "not available" in st["label"]
        and st["max_memory_allocated_bytes"] is None
    )


def test_devices_by_uuid_exactly_those(monkeypatch):
    """Device "GPU-fake-i" is NVML index i: the sampler reads the named GPUs only, in the given
    order."""
    fake = FakeNvml(4, **_defaults()).install(monkeypatch)
    rows = run_passes(NvmlSampler(interval_s=60, uuids=["GPU-fake-3", "GPU-fake-1"]), extra=0)
    assert [r["device"] for r in rows] == [3, 1, 3, 1]
    assert {dev for (name, dev) in fake.pos if not name.startswith("gpm")} == {
        1,
        3,
    }  # (the fake keys GPM by 0)
    assert fake.calls["by_uuid"] == 2
    # one unknown UUID: the other is sampled, the miss is kept; none known: the process instead
    s = NvmlSampler(interval_s=60, uuids=["GPU-fake-0", "GPU-other"])
    assert {r["device"] for r in run_passes(s, extra=0)} == {0}
    assert s.errors == ["device GPU-other: nvmlDeviceGetHandleByUUID: Not Found"]
    s = NvmlSampler(interval_s=60, uuids=["GPU-other"])
    assert {r["device"] for r in run_passes(s, extra=0)} == {-1}
    assert s.note == "NVML unavailable: no NVML device has the UUID(s) GPU-other"
    with pytest.raises(UsageError, match="devices .* or uuids, not both"):
        NvmlSampler(devices=[0], uuids=["GPU-fake-0"])


def test_summaries_key_a_gpu_by_node_and_index():
    """Device 0 of two nodes is two GPUs: each moves 3000 B over 2 s = 1500 B/s, not 3000 B/s
    pooled."""

    def row(t, node, dev, tx):
        r = dict.fromkeys(COLUMNS)
        r.update(
            t_s=t,
            device=dev,
            node=node,
            nvlink_tx_delta_bytes=tx,
            gpu_util_pct=50.0 if node == "a" else 70.0,
        )
        return r

    rows = [row(t, n, 0, None if t == 0 else 1500) for n in ("a", "b") for t in (0.0, 1.0, 2.0)]
    rows.append(dict(row(0.0, "a", -1, None), cpu_pct=5.0))  # host rows are not a GPU
    s = nv.summarize_nvml_by_node(rows)
    assert set(s) == {("a", 0), ("b", 0)}
    assert [d["mean_nvlink_tx_bytes_per_s"] for d in s.values()] == [1500.0, 1500.0]
    assert s[("a", 0)]["mean_gpu_util_pct"] == 50.0 and s[("b", 0)]["mean_gpu_util_pct"] == 70.0
    # pooled by index alone: doubled
    assert summarize_nvml(rows)[0]["mean_nvlink_tx_bytes_per_s"] == 3000.0
