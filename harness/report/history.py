"""``harness history`` output: the runs' key metrics as markdown, .csv, .parquet and a .png."""

from __future__ import annotations

from pathlib import Path

from harness.results.atomic import atomic_write_bytes, atomic_write_text
from harness.verdicts.history import HISTORY_COLUMNS, HISTORY_PLOT


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def history_markdown(rows: list[dict], skipped: list[str]) -> str:
    cols = (
        "started_utc",
        "name",
        "verdict",
        "complete",
        "request_throughput",
        "p99_ttft_ms",
        "p99_tpot_ms",
        "p99_e2el_ms",
        "bubble_ratio",
        "git_sha",
    )
    lines = [
        f"# History: {len(rows)} run(s)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [
            _f(r[c]) if isinstance(r[c], float) else str(r[c]) if r[c] is not None else "—"
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"> skipped: {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def write_history(rows: list[dict], skipped: list[str], out: str | Path) -> dict[str, Path]:
    """``out`` (markdown) plus the same table as .csv and .parquet, and a .png of key metrics."""
    import io

    import pandas as pd

    from harness.report.plots import plot_history

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.with_suffix("")
    df = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    files = {
        "markdown": atomic_write_text(out, history_markdown(rows, skipped)),
        "csv": atomic_write_text(base.with_suffix(".csv"), df.to_csv(index=False)),
    }
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    files["parquet"] = atomic_write_bytes(base.with_suffix(".parquet"), buf.getvalue())
    files["png"] = plot_history(rows, HISTORY_PLOT, base.with_suffix(".png"))
    return files
