"""``harness report RUN_DIR [--claims REPORT] [--predicted PRED_JSON]``: (re)render report.md /
report.html for a run, or for a sweep folder (``harness sweep``: its ``sweep.json``)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `harness run`")
    p.add_argument(
        "--claims",
        metavar="REPORT",
        default=None,
        help="a strategy report (markdown) or claims YAML: show each claim beside predicted and "
        "measured",
    )
    p.add_argument(
        "--predicted",
        metavar="PRED_JSON",
        default=None,
        help="a `harness predict --out` forecast: show it beside the bound and the measurement, "
        "with the "
        "error (default: RUN_DIR/prediction.json when present)",
    )
    p.add_argument(
        "--out", metavar="DIR", default=None, help="write the report here (default: RUN_DIR)"
    )


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.report.render import write_report

    if (Path(args.run_dir) / "sweep.json").is_file():
        return _sweep_report(Path(args.run_dir), args)

    files = write_report(
        args.run_dir, claims=args.claims, out_dir=args.out, predicted=args.predicted
    )
    print(f"report: {files.html}")
    print(f"        {files.markdown}")
    dag = f"{files.dag_json}, {files.dag_dot}" if files.dag_json else "none (model unknown)"
    print(f"dag:    {dag}")
    print(f"plots:  {len(files.plots)} PNG in {files.plots[0].parent}", file=sys.stdout)
    return 0


def _sweep_report(root, args: argparse.Namespace) -> int:
    from harness.errors import UsageError
    from harness.report.sweep_section import write_sweep_report
    from harness.spec.json_file import read_json_file

    if args.claims or args.predicted or args.out:
        raise UsageError(f"{root} is a sweep folder: --claims, --predicted and --out apply to runs")
    path = write_sweep_report(
        root, read_json_file(root / "sweep.json", None, "rerun harness sweep")
    )
    print(f"report: {path.with_suffix('.html')}")
    print(f"        {path}")
    return 0
