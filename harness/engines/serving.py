"""One serve through the seam, in this process: the spec's trace through ``engine``, the run
directory written by the process that reports (every engine, every rank of the reference world)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import EXIT_INCOMPLETE, EXIT_PASS


def serve_trace(engine, spec, run_dir: Path, reports: bool) -> int:
    """Serve the spec's trace through ``engine``. The reporting process opens the run directory,
    saves the trace (replay it with ``workload.trace``) and writes the summary from the engine's
    result. Exit 0 when the run completed (the verdict is the caller's), else 3."""
    from harness.plan.planner import plan as make_plan
    from harness.results.summary import final_summary
    from harness.results.writer import RunWriter
    from harness.spec.workload import build_trace, save_trace

    trace = build_trace(
        spec.workload, spec.shape.vocab, spec.run.max_seq_len or spec.shape.max_context
    )
    writer = RunWriter.create(run_dir, spec) if reports else None
    if writer is not None:
        save_trace(trace, run_dir / "trace.jsonl")
    failed = True
    try:
        result = engine.serve(spec, trace, writer)
        if writer is not None:
            summary, tables = final_summary(spec, make_plan(spec).to_dict(), result)
            writer.write_final(summary, tables, hostnames=result.hardware.get("hosts"))
            print(
                f"harness: {writer.summary['verdict']}: results in {run_dir}",
                file=sys.stderr,
                flush=True,
            )
        failed = False
    finally:
        engine.close(failed)
    stopped = writer is not None and not writer.summary.get("complete")
    return EXIT_PASS if result.complete and not stopped else EXIT_INCOMPLETE
