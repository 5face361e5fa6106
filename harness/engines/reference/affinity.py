"""Pinning a CPU rank to one core (``run.cpu_affinity``): steadier timings for a forecast.

With more ranks than cores the OS places each rank where a core is free. That is the fastest way
to serve, but the placement differs from run to run, and so does the speed: on the 2-core CPU twin
(8 ranks), identical 144-request runs varied by an s.d. of 0.12 in ln(mean ITL) unpinned, and by
0.04-0.06 with every rank pinned, at a cost of 17-30 % in mean ITL (docs/performance.md, "Pinned
ranks"). A forecast cannot be narrower than the host's run-to-run spread, so a calibration meant
for ``harness predict`` is best taken, and checked, pinned.

Modes (the cores are the ones this process may use, ``os.sched_getaffinity``, so a Slurm or
cgroup cpuset is kept; ``i`` is the rank's place on its host):

* ``none``: the OS places the ranks (the default);
* ``rank``: local rank ``i`` on core ``i mod n``: TP peers on different cores where there are
  enough;
* ``tp_group``: every rank of one TP group on one core (group ``i // tp`` on core ``group mod
  n``): a TP all-reduce's ranks hand the core to each other instead of waking another.

Only the CPU ranks are pinned: a GPU rank's host threads are the launcher's business (torchrun's
NUMA binding), so on CUDA the mode is noted and not applied.
"""

from __future__ import annotations

import os

MODES = ("none", "rank", "tp_group")


def core_for(mode: str, local_rank: int, tp: int, cores: list[int]) -> int | None:
    """The core a rank is pinned to under ``mode`` (None for ``none``)."""
    if mode == "none" or not cores:
        return None
    slot = local_rank if mode == "rank" else local_rank // max(tp, 1)
    return cores[slot % len(cores)]


def pin_process(core: int) -> None:
    """Every thread of this process (gloo's workers included, started before) on ``core``; threads
    started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            pass


def apply(mode: str, local_rank: int, tp: int, cuda: bool) -> tuple[int | None, str | None]:
    """Pin this rank as ``mode`` says; returns (its core or None, a note when the mode was asked
    for and not applied)."""
    if mode == "none":
        return None, None
    if cuda:
        return None, f"run.cpu_affinity: {mode} applies to CPU ranks only; not applied on CUDA"
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return None, f"run.cpu_affinity: {mode} not applied (no sched_setaffinity here)"
    core = core_for(mode, local_rank, tp, sorted(os.sched_getaffinity(0)))
    try:
        pin_process(core)
    except OSError as e:
        return None, f"run.cpu_affinity: {mode} not applied (core {core}: {e.strerror or e})"
    return core, None
