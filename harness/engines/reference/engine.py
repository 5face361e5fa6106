"""The reference engine behind the seam: our TP×PP×DP Llama, one torchrun process per rank.

Every rank calls ``ReferenceEngine(run_dir).serve(spec, trace, writer)`` (``harness run`` inside
torchrun; ``harness.engines.reference.launcher`` starts that world). Rank 0 holds the writer; at
the end every rank's payload is gathered to it and it alone returns the records, tables and
measured values. Other ranks return a result with no records (they report nothing).

Failure: SIGTERM/SIGINT/SIGHUP, ``run.timeout_s`` or the loss of the agent or launcher trip the
``StopGuard``: rank 0 writes what completed, marked incomplete, and the process ends with exit 3
after a short grace. A rank that raises names itself on stderr, reports itself to the launcher
(``harness.engines.reference.failures``; rank 0 also writes the partial summary) and exits
non-zero; torchrun then stops the others, and the launcher names the root cause in the summary.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist

from harness.engines.base import EngineResult
from harness.engines.reference import dist as hdist
from harness.engines.reference.arrivals import loadgen_extra
from harness.engines.reference.failures import describe, own_failure, report_failure
from harness.engines.reference.lifetime import failure_dir
from harness.engines.reference.stop import StopGuard
from harness.engines.reference.summary import reference_result
from harness.engines.reference.worker import run_rank
from harness.errors import EXIT_INCOMPLETE
from harness.plan.planner import plan as make_plan
from harness.results.summary import partial_summary


class ReferenceEngine:
    kind = "reference"

    def __init__(self, run_dir: str | Path, guard: StopGuard | None = None, loadgen=None):
        self.run_dir = Path(run_dir)
        self.guard = guard  # started at the rank's start (harness.commands.run_rank); else here
        self.loadgen = (
            loadgen  # LoadGenOptions: LoadGen's arrivals (harness.engines.reference.arrivals)
        )
        self.ctx = None
        self.profiled = False
        self.complete = False

    def serve(self, spec, trace, writer) -> EngineResult:
        state: dict = {"records": [], "t0": None, "run_dir": self.run_dir, "loadgen": self.loadgen}
        guard = self.guard = self.guard or StopGuard()

        def on_stop(reason: str) -> None:  # runs on the stop thread; RunWriter serialises writes
            if writer is not None:
                writer.write_partial(
                    partial_summary(spec, state["records"], reason), state["records"]
                )

        guard.arm(spec.run.timeout_s, on_stop)
        if writer is not None:
            # no "complete: true" once the agent or launcher is gone
            writer.stop_check = guard.check
        try:
            self.ctx = ctx = hdist.init(
                spec.layout,
                spec.run.device,
                spec.parallel.gpu_map,
                spec.run.comm_timeout_s,
                spec.run.instrument,
                spec.gpu.name,
                end_timeout_s=spec.run.timeout_s,
            )
            self.profiled = spec.run.profile_steps > 0
            payload = run_rank(ctx, spec, trace, guard, state, writer)
            gathered = [None] * ctx.env.world_size if writer is not None else None
            if ctx.env.world_size > 1:
                dist.gather_object(payload, gathered, dst=0)
            else:
                gathered = [payload]
            # Only rank 0 sees every replica's coordinator; the others vouch for themselves.
            complete = guard.check() is None and (
                writer is None or all(p.finished for p in gathered if p.coordinator)
            )
            self.complete = complete
            if writer is None:
                return EngineResult(records=[], complete=complete, incomplete_reason=guard.reason)
            result = reference_result(
                spec, make_plan(spec), gathered, complete=complete, reason=guard.reason
            )
            result.extra.update(loadgen_extra(state.get("scheduler"), self.loadgen, self.run_dir))
            return result
        except BaseException as e:
            rank = hdist.launch_env().rank
            place = spec.layout.place(rank) if 0 <= rank < spec.layout.world_size else None
            failure = own_failure(rank, place, e)
            print(f"harness: {describe(failure)}", file=sys.stderr, flush=True)
            if guard.reason is None:  # not a consequence of a stop already under way
                report_failure(failure_dir(), failure)
                if writer is not None:
                    summary = partial_summary(spec, state["records"], describe(failure))
                    writer.write_partial({**summary, "failure": failure}, state["records"])
            raise

    def close(self, failed: bool) -> None:
        if self.ctx is None or failed:
            return  # a failed rank waits for nobody: torchrun stops the world
        if self.ctx.env.world_size > 1:
            # not the world's group: its timeout (run.comm_timeout_s) is one collective's, and
            # rank 0's writing of a 10-minute run took longer (a --mlperf-rules run on the CPU
            # twin: every other rank timed out here and the run was lost)
            dist.barrier(group=self.ctx.end_group)
        if self.profiled:
            # Seen with torch 2.13 (CPU): after a torch.profiler window, the process's teardown
            # (process group, interpreter exit) corrupts the heap ("free(): invalid next size").
            # Every result is on disk by now, so leave without the teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if self.complete else EXIT_INCOMPLETE)
        hdist.shutdown()
