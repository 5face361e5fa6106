"""What ``harness run`` prints at the end of a run (the SLO table: ``harness.report.slo_table``)
and its exit code, from the run directory alone (``summary.json``, which the engine's launcher
settled after the run ended): 0 run complete and every SLO met, 1 run complete and some SLO missed
(or unmeasured), 3 run failed or interrupted, 4 run complete, none missed, some undecided at the
confidence level (INCONCLUSIVE)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_INCONCLUSIVE, EXIT_PASS
from harness.report.slo_table import slo_table


def exit_code(run_dir: Path, launch_rc: int) -> int:
    """The exit code from ``summary.json`` and the engine's ``serve`` (0: it ran to its end)."""
    from harness.results.writer import read_summary_file

    summary = read_summary_file(run_dir)
    if summary is None:
        if launch_rc == 0:  # a multi-node run: rank 0 and its results live on another node
            return EXIT_PASS
        print(
            f"harness run: failed before writing results (launch exit {launch_rc})", file=sys.stderr
        )
        return EXIT_INCOMPLETE
    if not summary.get("complete"):
        print(
            f"harness run: INCOMPLETE: {summary.get('incomplete_reason')}; partial results in "
            f"{run_dir}",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if launch_rc != 0:
        return EXIT_INCOMPLETE
    verdict = summary.get("verdict")
    print(slo_table(summary))
    if summary.get("loadgen"):  # --loadgen: LoadGen's own verdict beside ours
        from harness.report.loadgen_lines import loadgen_lines

        print("\n".join(loadgen_lines(summary["loadgen"])), file=sys.stderr)
    print(f"harness run: {verdict}; results in {run_dir}", file=sys.stderr)
    return verdict_exit_code(verdict)


def verdict_exit_code(verdict: str | None) -> int:
    """A complete run's verdict → its exit code: PASS 0, INCONCLUSIVE 4, anything else (FAIL,
    UNMEASURED) 1."""
    return {"PASS": EXIT_PASS, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(str(verdict), EXIT_FAIL)
