"""The NVML sampler's table: its columns, the NVML fields behind them and how each is read.

Units (raw NVML value → column):
  memory bytes → ``mem_*_bytes`` as is;  power mW → ``power_w = mW / 1000``;
  energy counter mJ → ``energy_j = mJ / 1000``;
  NVLink throughput counters KiB → ``nvlink_*_bytes = KiB * 1024``;
  GPM NVLink rates MiB/s → ``gpm_nvlink_*_bytes_per_s = MiB/s * 2**20``.
"""

from __future__ import annotations

from typing import Any, Callable

try:
    import pynvml
except ImportError:  # the CPU twin must still work without nvidia-ml-py
    pynvml = None  # type: ignore[assignment]

GPU_COLUMNS = (
    "mem_used_bytes",
    "mem_total_bytes",
    "gpu_util_pct",
    "mem_util_pct",
    "power_w",
    "energy_j",
    "energy_delta_j",
    "sm_clock_mhz",
    "temperature_c",
    "throttle_reasons",
    "nvlink_tx_bytes",
    "nvlink_rx_bytes",
    "nvlink_tx_delta_bytes",
    "nvlink_rx_delta_bytes",
    "gpm_sm_occupancy_pct",
    "gpm_dram_bw_util_pct",
    "gpm_nvlink_tx_bytes_per_s",
    "gpm_nvlink_rx_bytes_per_s",
)
HOST_COLUMNS = ("rss_bytes", "cpu_pct", "sys_mem_used_bytes")
COLUMNS = ("t_s", "device") + GPU_COLUMNS + HOST_COLUMNS

HOST_DEVICE = -1
ALL_LINKS = 0xFFFFFFFF  # NVML field scopeId meaning "sum over every NVLink"
KIB = 1024
MIB = 1024 * 1024

# (column, pynvml field-id constant name) for the cumulative NVLink data counters (KiB).
NVLINK_FIELDS = (
    ("nvlink_tx_bytes", "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX"),
    ("nvlink_rx_bytes", "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX"),
)
# (column, pynvml GPM metric constant name, scale from NVML unit to column unit).
GPM_METRICS = (
    ("gpm_sm_occupancy_pct", "NVML_GPM_METRIC_SM_OCCUPANCY", 1.0),
    ("gpm_dram_bw_util_pct", "NVML_GPM_METRIC_DRAM_BW_UTIL", 1.0),
    ("gpm_nvlink_tx_bytes_per_s", "NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC", float(MIB)),
    ("gpm_nvlink_rx_bytes_per_s", "NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC", float(MIB)),
)
GPM_COLUMNS = tuple(c for c, _, _ in GPM_METRICS)
FIELD_VALUE_MEMBER = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}


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


SCALAR_READERS: tuple[tuple[tuple[str, ...], Callable[[Any], tuple]], ...] = (
    (("mem_used_bytes", "mem_total_bytes"), _read_memory),
    (("gpu_util_pct", "mem_util_pct"), _read_utilization),
    (("power_w",), _read_power),
    (("sm_clock_mhz",), _read_sm_clock),
    (("temperature_c",), _read_temperature),
    (("throttle_reasons",), _read_throttle),
)
