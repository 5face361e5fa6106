"""Telemetry of a launched server: NVML on exactly the server's GPUs when it has any, else the CPU
twin of it, the whole server process tree sampled with psutil (the same ``nvml`` table,
``device = -1``).

Tree row (one per pass): ``rss_bytes`` = Σ RSS over the live processes of the server's session
(API server, EngineCore, every worker; shared pages counted once per process, as RSS does);
``cpu_pct`` = Σ psutil ``cpu_percent`` over them since the previous pass (100 = one core);
``sys_mem_used_bytes`` = the machine's used memory. ``t_s`` is seconds since the run's start.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import psutil

from harness.engines.openai_server.telemetry import start_node_sampler
from harness.engines.vllm.gpus import sampler_devices
from harness.engines.vllm.tree import session_members
from harness.measure.nvml import COLUMNS, HOST_DEVICE

RESCAN_EVERY = 10  # passes between scans of /proc for the session's members


class ServerTreeSampler:
    """Samples the processes of session ``sid`` every ``interval_s`` on a background thread."""

    def __init__(self, sid: int, interval_s: float, clock: Callable[[], float]):
        self.sid, self.interval_s, self.clock = sid, interval_s, clock
        self.note = "CPU: server process tree sampled with psutil (no NVML device)"
        self._procs: dict[int, psutil.Process] = {}
        self._live: set[int] = set()
        self._passes = 0
        self._rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="vllm-tree-sampler")

    def start(self) -> "ServerTreeSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        rss, cpu = 0, 0.0
        if self._passes % RESCAN_EVERY == 0:  # a /proc scan is the costly part: not every pass
            self._live = {pid for pid, _ in session_members(self.sid)}
        self._passes += 1
        for pid in list(self._procs):
            if pid not in self._live:
                del self._procs[pid]
        for pid in list(self._live):
            try:
                p = self._procs.get(pid)
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)  # primes the baseline; counted from the next pass
                else:
                    cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                self._procs.pop(pid, None)
                self._live.discard(pid)
        row = dict.fromkeys(COLUMNS)
        row.update(
            t_s=self.clock(),
            device=HOST_DEVICE,
            rss_bytes=int(rss),
            cpu_pct=float(cpu),
            sys_mem_used_bytes=int(psutil.virtual_memory().used),
            node=os.uname().nodename,
        )
        self._rows.append(row)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()

    def rows(self) -> list[dict]:
        return list(self._rows)


def start_sampler(
    sid: int | None, interval_s: float, clock: Callable[[], float], gpus: list[str] | None = None
):
    """NVML on the server's GPUs ``gpus`` (``harness.engines.vllm.gpus``), else (a CPU spec, or no
    NVML) the tree of session ``sid``; None when neither applies."""
    if gpus:
        sampler = start_node_sampler(interval_s, clock, **sampler_devices(gpus))
        if sampler is not None:
            return sampler
    if sid is None:
        return None
    return ServerTreeSampler(sid, max(interval_s, 0.5), clock).start()
