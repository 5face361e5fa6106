"""The client's event-loop thread at real-time priority while it serves a trace, so that its
timestamps are the server's delivery times, not the client's wait for a core.

Why (measured on the 2-core CPU host, benchmarks/client_vs_vllm_bench.py, docs/performance.md):
while a TP2-PP4 vLLM-CPU server serves, its 8 workers poll their shared-memory queues with
``sched_yield`` (vLLM keeps a reader spinning 1 s after each read), so both cores stay busy and the
run queue long; the client needs ~1 % of a core, but its loop thread spent nearly the whole run
waiting on the run queue (/proc/PID/task/TID/schedstat), so sends went out 0.6-2.6 s late and
token gaps looked 10x the server's own. vLLM's own benchmark client lagged just as much; under
SCHED_FIFO both sent within 2 ms of the schedule and saw the server's inter-token latency.

Policy: SCHED_FIFO priority 1 with SCHED_RESET_ON_FORK (threads and processes started from the
loop thread, e.g. the file flushes' pool, run at normal policy); the kernel's real-time throttling
(``sched_rt_runtime_us``) bounds it even if the loop spun. Needs CAP_SYS_NICE or RLIMIT_RTPRIO ≥ 1;
without it the loop runs at normal priority and the run's summary says so (``client.scheduling``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

FIFO_PRIORITY = 1


@contextmanager
def realtime_thread(priority: int = FIFO_PRIORITY) -> Iterator[str]:
    """The calling thread at SCHED_FIFO ``priority`` inside the block, its old policy restored
    after; yields what it got (``"SCHED_FIFO 1"`` or ``"normal (...)"`` with the reason)."""
    try:
        old_policy, old_param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except AttributeError:
        yield "normal (no SCHED_FIFO on this platform)"
        return
    except OSError as e:
        yield (
            f"normal (SCHED_FIFO refused: {e.strerror or e}; give CAP_SYS_NICE or RLIMIT_RTPRIO "
            f">= {priority})"
        )
        return
    try:
        yield f"SCHED_FIFO {priority}"
    finally:
        os.sched_setscheduler(0, old_policy, old_param)
