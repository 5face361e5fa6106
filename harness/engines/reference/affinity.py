"""Pinning a CPU rank to one core (``run.cpu_affinity``): steadier timings for a forecast.

With more ranks than cores the OS places each rank where a core is free. That is the fastest way
to serve, but the placement differs from run to run, and so does the speed. On the 2-core CPU twin
(8 ranks, identical 144-request runs at Poisson 4/s) the s.d. of ln(mean ITL) from run to run was
0.155 [0.107, 0.284] with the OS placing the ranks (12 runs) and 0.053 [0.035, 0.107] with each
rank pinned (9 runs), at a cost of 1.16-1.49x in mean ITL (docs/performance.md, "Pinned ranks").
Pinning a TP group's ranks to one shared core instead was as unsteady as none (0.18), so it is not
offered. A forecast cannot be narrower than the host's run-to-run spread: a calibration meant for
``harness predict`` is best taken, and checked, pinned.

``rank``: local rank ``i`` on core ``i mod n`` of the cores this process may use
(``os.sched_getaffinity``, so a Slurm or cgroup cpuset is kept); with TP innermost, TP peers land
on different cores where there are enough. Only CPU ranks are pinned: a GPU rank's host threads are
the launcher's business (torchrun's NUMA binding), so on CUDA the mode is noted and not applied.
"""

from __future__ import annotations

import os


def core_for(mode: str, local_rank: int, cores: list[int]) -> int | None:
    """The core a rank is pinned to under ``mode`` (None for ``none``)."""
    if mode == "none" or not cores:
        return None
    return cores[local_rank % len(cores)]


def pin_process(core: int) -> None:
    """Every thread of this process (gloo's workers included, started before) on ``core``; threads
    started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            pass


def apply(mode: str, local_rank: int, cuda: bool) -> tuple[int | None, str | None]:
    """Pin this rank as ``mode`` says; returns (its core or None, a note when the mode was asked
    for and not applied)."""
    if mode == "none":
        return None, None
    if cuda:
        return None, f"run.cpu_affinity: {mode} applies to CPU ranks only; not applied on CUDA"
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return None, f"run.cpu_affinity: {mode} not applied (no sched_setaffinity here)"
    core = core_for(mode, local_rank, sorted(os.sched_getaffinity(0)))
    try:
        pin_process(core)
    except OSError as e:
        return None, f"run.cpu_affinity: {mode} not applied (core {core}: {e.strerror or e})"
    return core, None
