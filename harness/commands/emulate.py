"""``harness emulate CONFIG [--rank R | --stage S]``: one rank's exact work on the local device,
and the projection of the whole deployment from it (see harness/emulate/__init__.py for every
formula).

Without --rank/--stage it emulates the first, a middle and the last stage (TP rank 0 of each),
one after the other. Prints a table, or the JSON with --json; --out writes the JSON atomically.
Exit: 0 every point measured (or skipped for the time budget / memory), 3 some point raised
(its note says what; the others are still measured and written), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.errors import UsageError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole numbers"
        ) from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers, e.g. 1,8,32")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML (e.g. configs/llama3-70b-tp2-pp4-h100.yaml)")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--rank", type=int, help="the global rank to emulate (default: first, middle, last stage)"
    )
    who.add_argument("--stage", type=int, help="emulate TP rank 0 of this pipeline stage")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", help="also write the JSON to this file (atomically)")
    p.add_argument(
        "--batches", type=_int_list, help="decode batch sizes (GPU default 1,8,32,64,128; CPU 1,4)"
    )
    p.add_argument(
        "--contexts",
        type=_int_list,
        help="decode context lengths (GPU default 512,2048; CPU 32,96)",
    )
    p.add_argument(
        "--prefill",
        type=_int_list,
        help="prefill token counts, batch 1 (GPU default 512,2048,8192; CPU 32,96)",
    )
    p.add_argument(
        "--iters", type=int, help="timed iterations per point, median taken (GPU default 20; CPU 3)"
    )
    p.add_argument(
        "--no-graphs", action="store_true", help="time decode eagerly on CUDA (no CUDA graph)"
    )
    p.add_argument(
        "--budget-s", type=float, help="per rank: start no new point after this many seconds"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set run.device=cpu (repeatable)",
    )


def main(args: argparse.Namespace) -> int:
    from harness.spec.spec import load_spec

    spec = load_spec(args.config, args.overrides)
    from harness import emulate as em  # torch: imported after the spec is known to be good
    from harness.engines.reference.dist import LaunchEnv, pick_device

    ranks = em.pick_ranks(spec.layout, args.rank, args.stage)
    if args.iters is not None and args.iters < 1:
        raise UsageError(f"--iters: must be >= 1, got {args.iters}")
    if args.budget_s is not None and args.budget_s <= 0:
        raise UsageError(f"--budget-s: must be > 0, got {args.budget_s}")
    # one process, device 0
    device = pick_device(spec.run.device, LaunchEnv(0, 1, 0, 1, None, False), None, spec.gpu.name)
    base = em.default_sweep(device)
    sweep = em.Sweep(
        args.batches or base.batches,
        args.contexts or base.contexts,
        args.prefill or base.prefill,
        args.iters or base.iters,
        graphs=not args.no_graphs,
        budget_s=args.budget_s,
    )
    report = em.emulate(spec, ranks, sweep, device, on_point=_progress)
    if args.out:
        from harness.results.atomic import atomic_write_json

        atomic_write_json(args.out, report)
    if args.json:
        from harness.results.atomic import clean_floats

        sys.stdout.write(json.dumps(clean_floats(report), indent=1) + "\n")
    else:
        sys.stdout.write(render(report))
    errors = [
        p["note"]
        for rk in report["ranks"]
        for p in rk["decode"] + rk["prefill"]
        if p["note"].startswith("error")
    ]
    if errors:
        sys.stderr.write(f"harness emulate: {len(errors)} point(s) failed, e.g. {errors[0]}\n")
    return 3 if errors else 0


def _progress(rank, pt) -> None:
    """One stderr line per point as it is done, so a log cut short by a timeout still has them."""
    ms = "-" if pt.step_s is None else f"{pt.step_s * 1e3:.3f} ms"
    rates = (
        f", {_f(pt.copy_frac, '.0%')} of copy BW, {_f(pt.peak_frac, '.0%')} of matmul peak"
        if pt.step_s
        else ""
    )
    sys.stderr.write(
        f"emulate rank {rank.rank}: {pt.phase} B={pt.batch} T={pt.tokens} ctx={pt.context}: {ms}"
        f"{rates} {pt.mode} {pt.check or pt.note}\n"
    )
    sys.stderr.flush()


def _f(v, fmt: str, scale: float = 1.0) -> str:
    return "-" if v is None or v != v else format(v * scale, fmt)


def _bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.3f} MB"


def _g(v) -> str:
    """A rate in 3 significant figures without exponents for the usual range."""
    if v is None or v != v:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}"


def render(r: dict) -> str:
    """The report as text: peaks, each rank's points, projection beside the analytic floors."""
    dev, pk = r["device"], r["peaks"]
    lines = [
        f"harness emulate: {r['spec']['name']} ({r['spec']['model']} {r['spec']['dtype']}, "
        f"TP{r['spec']['tp']}-PP{r['spec']['pp']}-DP{r['spec']['dp']}) on {dev['name']}"
    ]
    if dev["note"]:
        lines.append(f"NOTE: {dev['note']}")
    lines.append(
        f"measured ceilings (fastest of {pk['iters']}): copy {pk['copy_gbps_measured']:.1f} GB/s, "
        f"{pk['matmul_dtype']} matmul {pk['matmul_tflops_measured']:.3g} TFLOP/s "
        f"({pk['matmul_n']}^3)"
    )
    for note in pk.get("notes") or []:
        lines.append(f"  {note}")
    for rk in r["ranks"]:
        lines.append("")
        lines.append(
            f"rank {rk['rank']} ({rk['kind']} stage {rk['stage']}, tp {rk['tp_rank']}): layers "
            f"{rk['layers'][0]}..{rk['layers'][-1]}, {rk['params']:,} params "
            f"(planner {rk['params_expected']:,}), {_bytes(rk['param_bytes'])}, built in "
            f"{rk['build_s']:.1f} s"
        )
        lines.append(
            f"  {'phase':8}{'B':>5}{'T':>6}{'ctx':>6}{'ms':>10}{'GB/s':>9}{'%copy':>7}"
            f"{'TFLOP/s':>9}"
            f"{'%peak':>7}  {'mode':11}{'comm B':>10}  check"
        )
        for pt in rk["decode"] + rk["prefill"]:
            comm = sum(v["bytes"] for v in pt["comm"].values())
            lines.append(
                f"  {pt['phase']:8}{pt['batch']:>5}{pt['tokens']:>6}{pt['context']:>6}"
                f"{_f(pt['step_s'], '.3f', 1e3):>10}{_g(pt['gbps']):>9}"
                f"{_f(pt['copy_frac'], '.0%'):>7}"
                f"{_g(pt['tflops']):>9}{_f(pt['peak_frac'], '.0%'):>7}  {pt['mode'] or '-':11}"
                f"{comm:>10}  {pt['check'] or pt['note'] or '-'}"
                + (f" ({pt['note']})" if pt["note"] and pt["check"] else "")
            )
    p, a = r["projection"], r["analytic"]
    lines += [
        "",
        f"PROJECTION ({p['basis']}) beside the planner's analytic floors:",
        f"  {'':28}{'projection':>12}{'analytic':>12}",
    ]
    from harness.emulate.projection import PROJECTION_ROWS

    for key, label, scale, fmt in PROJECTION_ROWS:
        lines.append(f"  {label:28}{_f(p[key], fmt, scale):>12}{_f(a[key], fmt, scale):>12}")
    lines.append("  stages: " + ", ".join(f"{s}: {src}" for s, src in r["stage_sources"].items()))
    for prob in p["problems"]:
        lines.append(f"  projection: {prob}")
    for err in r.get("planner_errors") or []:
        lines.append(f"  {err}")
    return "\n".join(lines) + "\n"
