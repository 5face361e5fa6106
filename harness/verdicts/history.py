"""The history of many runs: every run directory under a folder, key metrics per run, oldest first
(``harness history``; the table and plot are rendered by ``harness.report.history``)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.results.reader import as_number, load_run
from harness.results.schema import SUMMARY_FILE

HISTORY_COLUMNS = (
    "started_utc",
    "name",
    "run_dir",
    "complete",
    "verdict",
    "git_sha",
    "gpu",
    "total_gpus",
    "request_throughput",
    "output_throughput",
    "request_goodput",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "p99_e2el_ms",
    "bubble_ratio",
    "gpu_utilization_pct",
    "memory_per_gpu_gb",
)
HISTORY_PLOT = [
    ("request_throughput", "throughput (req/s)"),
    ("p99_ttft_ms", "TTFT p99 (ms)"),
    ("p99_tpot_ms", "TPOT p99 (ms)"),
    ("bubble_ratio", "bubble ratio"),
]


def collect_history(root: str | Path) -> tuple[list[dict], list[str]]:
    """Every run directory under ``root`` (any depth), sorted by start time; plus the skipped
    ones."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(
            f"{root}: not a directory; give the folder that holds run directories (e.g. results)"
        )
    rows, skipped = [], []
    for summary_path in sorted(root.rglob(SUMMARY_FILE)):
        d = summary_path.parent
        try:
            run = load_run(d, tables=False)
        except UsageError as e:
            skipped.append(str(e))
            continue
        s, m, meas, hw = (
            run.summary,
            run.summary.get("metrics") or {},
            run.summary.get("measured") or {},
            run.summary.get("hardware") or {},
        )
        rows.append(
            {
                "started_utc": s.get("started_utc"),
                "name": s.get("name"),
                "run_dir": str(d),
                "complete": bool(s.get("complete")),
                "verdict": s.get("verdict"),
                "git_sha": run.env.get("git_sha"),
                "gpu": hw.get("gpu"),
                "total_gpus": hw.get("total_gpus"),
                **{
                    k: as_number(m.get(k))
                    for k in (
                        "request_throughput",
                        "output_throughput",
                        "request_goodput",
                        "p99_ttft_ms",
                        "p99_tpot_ms",
                        "p99_e2el_ms",
                    )
                },
                **{
                    k: as_number(meas.get(k))
                    for k in ("bubble_ratio", "gpu_utilization_pct", "memory_per_gpu_gb")
                },
            }
        )
    if not rows:
        raise UsageError(
            f"{root}: no readable run directory (summary.json) found"
            + (f"; skipped: {skipped[0]}" if skipped else "; run `harness run` first")
        )
    rows.sort(key=lambda r: (r["started_utc"] or "", r["run_dir"]))
    return rows, skipped
