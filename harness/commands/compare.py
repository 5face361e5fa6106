"""``harness compare BASE NEW [--threshold PCT] [--confidence C] [--min-effect NAME=MS ...]
[--min-effect-e2e PCT] [--history DIR] [--force] [--json]``: exit 1 on a regression, 4 when a
change worse than the threshold could not be confirmed (INCONCLUSIVE), 0 otherwise."""

from __future__ import annotations

import argparse
import json

from harness.errors import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", metavar="BASE", help="the baseline run directory")
    p.add_argument("new", metavar="NEW", help="the run directory to check")
    p.add_argument(
        "--threshold",
        metavar="PCT",
        type=float,
        default=5.0,
        help="a change beyond this many percent in the worse direction, with confidence, is a "
        "regression (default 5)",
    )
    p.add_argument(
        "--confidence",
        metavar="C",
        type=float,
        default=0.95,
        help="confidence of every change's interval (default 0.95)",
    )
    p.add_argument(
        "--min-effect",
        metavar="NAME=MS",
        action="append",
        default=[],
        help="the smallest change that matters for a latency family (ttft, tpot, itl, e2el, queue) "
        "or a metric key (p99_queue_ms), in its unit; repeatable; default: --min-effect-e2e",
    )
    p.add_argument(
        "--min-effect-e2e",
        metavar="PCT",
        type=float,
        default=1.0,
        help="default floor of a latency change: this percentage of the base run's E2E, a TPOT/ITL "
        "change counted over a request's output tokens (default 1)",
    )
    p.add_argument(
        "--history",
        metavar="DIR",
        default=None,
        help="a folder of earlier runs of the same spec: their run-to-run spread widens every "
        "interval (needs 3 or more)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="compare runs of different models/layouts, or incomplete runs, anyway",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def parse_min_effect(items: list[str]) -> dict[str, float]:
    """``["queue=20", "p99_ttft_ms=50"]`` → {name: value}."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--min-effect {item!r}: write NAME=NUMBER, e.g. queue=20")
    return out


def main(args: argparse.Namespace) -> int:
    from harness.report.compare_table import to_markdown
    from harness.verdicts.compare import compare_dirs

    cmp = compare_dirs(
        args.base,
        args.new,
        args.threshold,
        args.force,
        history_dir=args.history,
        confidence=args.confidence,
        min_effect=parse_min_effect(args.min_effect),
        min_effect_e2e_pct=args.min_effect_e2e,
    )
    print(
        json.dumps(cmp.to_dict(), indent=1) if args.json else to_markdown(cmp),
        end="" if not args.json else "\n",
    )
    return {"REGRESSION": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(cmp.verdict, EXIT_PASS)
