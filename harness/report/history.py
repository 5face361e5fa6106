"""``harness history`` output: the runs' key metrics as markdown, .csv, .parquet and a .png, with
each metric's noise band over the complete runs of one spec (``harness.verdicts.history``)."""

from __future__ import annotations

from pathlib import Path

from harness.results.atomic import atomic_write_bytes, atomic_write_text
from harness.verdicts.history import HISTORY_COLUMNS, HISTORY_PLOT, noise_bands


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
    lines += bands_markdown(noise_bands(rows))
    return "\n".join(lines) + "\n"


def bands_markdown(bands: dict[str, dict[str, dict]], confidence: float = 0.95) -> list[str]:
    """Each spec's noise band per metric: where one more run of the same system falls with
    probability ``confidence`` (geometric mean ∓ t·s·√(1 + 1/k) on the log scale), and whether the
    latest run fell inside."""
    if not bands:
        return ["", "Noise band: needs 3 or more complete runs of one spec."]
    out = []
    for name, metrics in bands.items():
        out += [
            "",
            f"## Noise band of {name} ({confidence * 100:g} %: where one more run falls)",
            "",
            "| metric | runs | geometric mean | band | latest | latest inside |",
            "|---|---|---|---|---|---|",
        ]
        for key, b in metrics.items():
            out.append(
                f"| {key} | {b['runs']} | {_f(b['center'])} | [{_f(b['low'])}, {_f(b['high'])}] | "
                f"{_f(b['latest'])} | {'yes' if b['inside'] else 'NO'} |"
            )
    return out


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
    latest = rows[-1]["name"] if rows else None
    bands = noise_bands(rows).get(str(latest), {})
    files["png"] = plot_history(rows, HISTORY_PLOT, base.with_suffix(".png"), bands)
    return files
