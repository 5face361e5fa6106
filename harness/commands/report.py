"""``harness report RUN_DIR [--claims REPORT] [--predicted PRED_JSON]``: (re)render report.md /
report.html for a run."""

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
    from harness.report.render import write_report

    files = write_report(
        args.run_dir, claims=args.claims, out_dir=args.out, predicted=args.predicted
    )
    print(f"report: {files.html}")
    print(f"        {files.markdown}")
    dag = f"{files.dag_json}, {files.dag_dot}" if files.dag_json else "none (model unknown)"
    print(f"dag:    {dag}")
    print(f"plots:  {len(files.plots)} PNG in {files.plots[0].parent}", file=sys.stdout)
    return 0
