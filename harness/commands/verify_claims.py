"""``harness verify-claims REPORT [--config CONFIG] [--results RUN_DIR] [--json]``.

Exit 0 when no claim is refuted, 1 when some claim is, 2 on bad input (cli.py turns the
UsageError into one line). Schema and tolerances: docs/claims.md."""

from __future__ import annotations

import argparse
import json
import textwrap

from harness.verdicts.claims import Report, load_claims, verify


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "report", help="a claims YAML (docs/claims.md) or a markdown report in the seed's format"
    )
    p.add_argument(
        "--config",
        help="spec YAML to check against (overrides the model, hardware and strategy "
        "the report names; states the workload)",
    )
    p.add_argument(
        "--results",
        metavar="RUN_DIR",
        help="a run directory: its measured values replace predictions",
    )
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def main(args: argparse.Namespace) -> int:
    report = verify(load_claims(args.report), args.config, args.results)
    print(
        json.dumps(report.to_dict(), indent=1, ensure_ascii=False)
        if args.json
        else render(args.report, report)
    )
    return 1 if report.refuted else 0


def _short(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return "-" if v is None else str(v).replace(" ", "")


def render(path: str, r: Report) -> str:
    m, lay, hw = r.model, r.layout, r.hardware
    out = [
        f"verify-claims {path}",
        f"checked against {m['name']} {m['dtype']}, TP{lay['tp']}-PP{lay['pp']}-DP{lay['dp']} on "
        f"{hw['nodes']}x{hw['gpus_per_node']} {hw['gpu']}; workload "
        + ("stated" if r.workload_stated else "not stated")
        + (f"; run {r.results}" if r.results else ""),
    ]
    out += [f"note: {n}" for n in r.notes]
    out.append("")
    for v in r.claims:
        name = v.id + (f"[{v.index}]" if v.index is not None else "")
        head = f"{v.verdict:<10}  {name:<30}  claimed {_short(v.claimed):<12}"
        if v.expected is not None:
            head += f" expected {_short(v.expected)}"
        if v.unit_slip:
            head += f" ({v.unit_slip})"
        out.append(head.rstrip())
        out += textwrap.wrap(
            f"{v.source}: {v.reason}", width=99, initial_indent=" " * 12, subsequent_indent=" " * 12
        )
    counts = {
        k: sum(v.verdict == k for v in r.claims) for k in ("CONFIRMED", "REFUTED", "UNVERIFIED")
    }
    out += ["", ", ".join(f"{n} {k.lower()}" for k, n in counts.items())]
    return "\n".join(out)
