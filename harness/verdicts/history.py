"""The history of many runs: every run directory under a folder, key metrics per run, oldest first
(``harness history``; the table and plot are rendered by ``harness.report.history``), the noise
band of each key metric over the complete runs of one spec (where one more run of the same system
falls: ``harness.verdicts.change.noise_band``), and the earlier runs ``harness compare --history``
widens its intervals with."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from harness.errors import UsageError
from harness.results.reader import Run, as_number, load_run
from harness.results.schema import SUMMARY_FILE
from harness.verdicts.change import noise_band

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
BAND_METRICS = (
    "request_throughput",
    "output_throughput",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "p99_e2el_ms",
    "bubble_ratio",
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


def noise_bands(rows: list[dict], confidence: float = 0.95) -> dict[str, dict[str, dict]]:
    """Per run name, per key metric (``BAND_METRICS``): the band where one more run falls with
    probability ``confidence``, from that name's complete runs ({runs, center, low, high, latest,
    inside}); a metric with fewer than 3 runs' values has none."""
    out: dict[str, dict[str, dict]] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        runs = [r for r in rows if r["name"] == name and r["complete"]]
        bands = {}
        for key in BAND_METRICS:
            values = [r[key] for r in runs if r.get(key) is not None]
            band = noise_band(values, confidence)
            if band is None:
                continue
            center, low, high = band
            latest = values[-1]
            bands[key] = {
                "runs": len(values),
                "center": center,
                "low": low,
                "high": high,
                "latest": latest,
                "inside": low <= latest <= high,
            }
        if bands:
            out[str(name)] = bands
    return out


SYSTEM_SECTIONS = ("model", "cluster", "parallel", "workload", "run", "engine")


def _same_system(run: Run, base: Run) -> bool:
    """The same spec: name and every section that shapes the system or its load (the SLO
    targets may differ)."""

    def ident(r: Run) -> tuple:
        spec = r.spec or {}
        return (r.summary.get("name"), *(spec.get(k) for k in SYSTEM_SECTIONS))

    return ident(run) == ident(base)


def comparable_history(
    root: str | Path, base: Run, exclude: Iterable[Path] = ()
) -> list[dict[str, Any]]:
    """The summaries of the complete runs under ``root`` of the same spec as ``base`` (name and
    ``SYSTEM_SECTIONS``), except the ``exclude``d run directories, oldest first: the run-to-run
    variation ``harness compare --history`` reads NEW against."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--history: {root} is not a directory; give the folder of earlier runs")
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for summary_path in sorted(root.rglob(SUMMARY_FILE)):
        d = summary_path.parent
        if d.resolve() in skip:
            continue
        try:
            run = load_run(d, tables=False)
        except UsageError:
            continue
        if run.complete and _same_system(run, base):
            found.append(run.summary)
    found.sort(key=lambda s: s.get("started_utc") or "")
    return found
