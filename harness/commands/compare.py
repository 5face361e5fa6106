"""``harness compare BASE NEW [--threshold PCT] [--force] [--json]``: exit 1 on a regression."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", metavar="BASE", help="the baseline run directory")
    p.add_argument("new", metavar="NEW", help="the run directory to check")
    p.add_argument(
        "--threshold",
        metavar="PCT",
        type=float,
        default=5.0,
        help="a change beyond this many percent in the worse direction is a regression (default 5)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="compare runs of different models/layouts, or incomplete runs, anyway",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def main(args: argparse.Namespace) -> int:
    from harness.verdicts.compare import compare_dirs, to_markdown

    cmp = compare_dirs(args.base, args.new, args.threshold, args.force)
    print(
        json.dumps(cmp.to_dict(), indent=1) if args.json else to_markdown(cmp),
        end="" if not args.json else "\n",
    )
    return 1 if cmp.regressions else 0
