"""What ``harness run`` prints at the end of a run and its exit code, from the run directory alone
(``summary.json``, which the engine's launcher settled after the run ended): 0 run complete and
every SLO met, 1 run complete and some SLO missed, 3 run failed or interrupted."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_PASS


def slo_table(summary: dict) -> str:
    """The run's SLO verdicts and headline rates as a plain-text table."""
    m = summary.get("metrics") or {}
    lines = [f"{'SLO target':<28} {'measured':>12} {'margin':>9}  verdict", "-" * 60]
    for v in summary.get("slo") or []:
        measured = "-" if v["measured"] is None else f"{v['measured']:.3g}"
        margin = "-" if v["margin_pct"] is None else f"{v['margin_pct']:+.1f}%"
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[v["passed"]]
        lines.append(f"{v['target']:<28} {measured:>12} {margin:>9}  {verdict}")
    lines.append("-" * 60)
    fmt = lambda x, unit: "-" if x is None else f"{x:.3g} {unit}"  # noqa: E731
    lines.append(
        f"requests {m.get('completed')}, throughput {fmt(m.get('request_throughput'), 'req/s')}, "
        f"goodput {fmt(m.get('request_goodput'), 'req/s')}, output "
        f"{fmt(m.get('output_throughput'), 'tok/s')}"
    )
    lines.append(
        f"TTFT p50/p99 {fmt(m.get('p50_ttft_ms'), 'ms')} / {fmt(m.get('p99_ttft_ms'), 'ms')}, "
        f"TPOT p50/p99 {fmt(m.get('p50_tpot_ms'), 'ms')} / {fmt(m.get('p99_tpot_ms'), 'ms')}"
    )
    caveat = summary.get("slo_preset") if isinstance(summary.get("slo_preset"), dict) else None
    if caveat:  # a named preset borrows a benchmark's limits, not its rules
        lines += textwrap.wrap(
            f"preset {caveat.get('preset')}: {caveat.get('note')}", 99, subsequent_indent="  "
        )
        if caveat.get("warning"):
            lines += textwrap.wrap(f"WARNING: {caveat['warning']}", 99, subsequent_indent="  ")
    lines.append(f"overall: {summary.get('verdict')}")
    return "\n".join(lines)


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
    print(f"harness run: {verdict}; results in {run_dir}", file=sys.stderr)
    return EXIT_PASS if verdict == "PASS" else EXIT_FAIL
