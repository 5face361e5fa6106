"""``harness history DIR [--out FILE]``: a table (markdown, CSV, parquet) and a plot of key metrics
of every run directory under DIR, oldest first."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="a folder of run directories (e.g. results)")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help=(
            "markdown file to write; .csv, .parquet and .png go beside it (default DIR/history.md)"
        ),
    )


def main(args: argparse.Namespace) -> int:
    from harness.report.history import history_markdown, write_history
    from harness.verdicts.history import collect_history

    rows, skipped = collect_history(args.dir)
    out = Path(args.out) if args.out else Path(args.dir) / "history.md"
    files = write_history(rows, skipped, out)
    print(history_markdown(rows, skipped), end="")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
