"""One spec through both engines in one invocation: the reference engine (8 gloo ranks) and a real
vLLM server with the same layout, on the same checkpoint and the same trace, each metric with the
ratio vLLM / reference.

    .venv/bin/python benchmarks/engines_side_by_side.py [--config
    configs/tiny-tp2-pp4-vllm-cpu.yaml]
        [--checkpoint results/tiny-llama] [--requests 48] [--input 32] [--output 16]
        [--concurrency 8] [--rate 4] [--out DIR] [--repeats N] [--workloads closed|poisson|both]

For each workload (a closed loop of ``--concurrency``, then Poisson at ``--rate``): the reference
run first (its 8 ranks and the 15 GB vLLM server do not fit a 24 GB machine together), then the vLLM
server is started once (the harness's own launch: reaper, readiness) and both workloads are sent to
it as ``engine.kind: openai`` runs; the server is stopped at the end. Both engines' limits are
printed (the server gets the reference engine's: ``--max-num-seqs`` = its sequences in flight per
replica, ``--max-num-batched-tokens`` = its token budget), and the prefix-cache hits of each vLLM
run, which must be 0: the cache is off, so the second workload reuses nothing of the first. Runs
go one after the other, never at the same time. Every run is a ``harness run`` in ``--out``
(default a temporary folder), so ``harness report``/``compare`` work on them afterwards. The
timing of a loaded machine is noise: read the ratios, and compare only numbers measured in the
same invocation.

``--repeats N``: N runs of each engine and workload (the reference's first, then vLLM's on one
server); each metric is the mean over the repeats, and the ratio reference / vLLM carries its
interval from the run-to-run spread: ln ratio = mean ln(ref) − mean ln(vLLM) ± t·SE (Welch, 95 %),
SE² = s²_ref/n + s²_vLLM/n of the logs; with one repeat the ratio has no interval.

``--baseline-set FIELD=VALUE`` (repeatable): a second reference variant with those overrides (for
example ``run.cpu_all_reduce=gloo``: the reference before the shared-memory all-reduce), run
alternately with the reference (reference 0, baseline 0, reference 1, ...), so that the host's
drift hits both alike; a second table gives reference / baseline with the same intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = [
    ("request_throughput", "throughput (req/s)"),
    ("output_throughput", "output tokens/s"),
    ("p50_ttft_ms", "TTFT p50 (ms)"),
    ("p99_ttft_ms", "TTFT p99 (ms)"),
    ("p50_tpot_ms", "TPOT p50 (ms)"),
    ("p99_tpot_ms", "TPOT p99 (ms)"),
    ("p50_itl_ms", "ITL p50 (ms)"),
    ("p99_itl_ms", "ITL p99 (ms)"),
    ("p99_e2el_ms", "E2E p99 (ms)"),
]


def harness_run(config: Path, run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").exists()
        else {}
    )
    if p.returncode not in (0, 1, 4) or not summary.get("complete"):  # 4: INCONCLUSIVE
        raise SystemExit(f"run {run_dir} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    print(
        f"  {run_dir.name}: {time.monotonic() - t0:.0f} s, verdict {summary['verdict']}, load "
        f"average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )
    return summary


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4g}"


def ratio_interval(a: list[float], b: list[float], confidence: float = 0.95):
    """(ratio of geometric means a/b, low, high) from repeats (module docstring); low/high None
    with fewer than 2 repeats on a side or a value <= 0."""
    import math

    from harness.measure.special import t_ppf

    if not a or not b or min(a + b) <= 0:
        return None, None, None
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    d = sum(la) / len(la) - sum(lb) / len(lb)
    if len(a) < 2 or len(b) < 2:
        return math.exp(d), None, None
    va = sum((x - sum(la) / len(la)) ** 2 for x in la) / (len(la) - 1) / len(la)
    vb = sum((x - sum(lb) / len(lb)) ** 2 for x in lb) / (len(lb) - 1) / len(lb)
    se = math.sqrt(va + vb)
    if se == 0:
        return math.exp(d), math.exp(d), math.exp(d)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = t_ppf((1 + confidence) / 2, df)
    return math.exp(d), math.exp(d - t * se), math.exp(d + t * se)


def repeats_table(
    name: str, refs: list[dict], vllms: list[dict], labels: tuple[str, str] = ("reference", "vLLM")
) -> str:
    """Means over repeats and the ratio reference / vLLM (or ``labels``' first / second) with its
    interval (module docstring)."""
    ratio = f"{labels[0][:4]}/{labels[1][:8]} [95 % CI]"
    lines = [
        f"{name} ({len(refs)} + {len(vllms)} runs)",
        f"  {'metric':<22} {labels[0]:>11} {labels[1]:>11} {ratio:>26}",
    ]
    for key, label in METRICS:
        a = [r["metrics"][key] for r in refs if r["metrics"].get(key) is not None]
        b = [v["metrics"][key] for v in vllms if v["metrics"].get(key) is not None]
        r, lo, hi = ratio_interval(a, b)
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        cell = "—" if r is None else f"{r:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if lo else "")
        lines.append(f"  {label:<22} {_fmt(mean(a)):>11} {_fmt(mean(b)):>11} {cell:>26}")
        if a or b:  # the runs' own values
            lines.append(f"  {'':<22} each: {' '.join(_fmt(x) for x in a)} | ")
            lines[-1] += " ".join(_fmt(x) for x in b)
    return "\n".join(lines)


def table(name: str, ref: dict, vllm: dict) -> str:
    lines = [f"{name}", f"  {'metric':<22} {'reference':>11} {'vLLM':>11} {'vLLM/ref':>9}"]
    for key, label in METRICS:
        a, b = ref["metrics"].get(key), vllm["metrics"].get(key)
        ratio = f"{b / a:.3g}" if a and b is not None else "—"
        lines.append(f"  {label:<22} {_fmt(a):>11} {_fmt(b):>11} {ratio:>9}")
    lag = vllm.get("client") or {}
    srv = (vllm.get("server_metrics") or {}).get("ttft") or {}
    lines.append(
        f"  vLLM client lag p50/p99 {_fmt(lag.get('p50_ms'))} / {_fmt(lag.get('p99_ms'))} ms "
        f"({lag.get('scheduling')}); server-side ITL p99 "
        f"{_fmt(((vllm.get('server_metrics') or {}).get('itl') or {}).get('p99_ms'))} ms; "
        f"server-side TTFT mean {_fmt(srv.get('mean_ms'))} ms (client mean "
        f"{_fmt(vllm['metrics'].get('mean_ttft_ms'))})"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml"))
    ap.add_argument("--checkpoint", default=str(REPO / "results" / "tiny-llama"))
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--input", type=int, default=32)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each engine and workload")
    ap.add_argument("--workloads", choices=("closed", "poisson", "both"), default="both")
    ap.add_argument(
        "--baseline-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a second reference variant with these overrides, run alternately (docstring)",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record
    from harness.spec.spec import load_spec
    from tiny_checkpoint import fixed_length_sets

    common = fixed_length_sets(args.checkpoint, args.requests, args.input, args.output)
    out = Path(args.out or tempfile.mkdtemp(prefix="engines-"))
    out.mkdir(parents=True, exist_ok=True)
    workloads = [
        (
            f"closed loop, concurrency {args.concurrency}",
            ["workload.arrival=closed", f"workload.concurrency={args.concurrency}"],
        ),
        (
            f"Poisson {args.rate:g}/s",
            ["workload.arrival=poisson", f"workload.rate_rps={args.rate}"],
        ),
    ]
    keep = {"closed": workloads[:1], "poisson": workloads[1:], "both": workloads}
    workloads = keep[args.workloads]
    reps = range(args.repeats)
    print(f"runs in {out}", file=sys.stderr)
    refs, bases = [], []
    for i, (_, wl) in enumerate(workloads):
        refs.append([])
        bases.append([])
        for k in reps:
            ref_sets = common + wl + ["engine={kind: reference}"]
            refs[-1].append(harness_run(Path(args.config), out / f"reference-{i}-{k}", ref_sets))
            if args.baseline_set:
                bases[-1].append(
                    harness_run(
                        Path(args.config), out / f"baseline-{i}-{k}", ref_sets + args.baseline_set
                    )
                )

    spec = load_spec(args.config, common)
    server = launch_server(spec, out)
    try:
        info = asyncio.run(bring_up(spec, server, asyncio.Event()))
        target = (
            f"engine={{kind: openai, url: '{server.launch.url}', model: '{server.launch.model}'}}"
        )
        vllms = [
            [
                harness_run(Path(args.config), out / f"vllm-{i}-{k}", common + wl + [target])
                for k in reps
            ]
            for i, (_, wl) in enumerate(workloads)
        ]
    finally:
        stop_and_record(server, out)
    lay = spec.layout
    print(
        f"{spec.name}: TP{lay.tp}-PP{lay.pp}-DP{lay.dp}, {args.requests} requests of {args.input} "
        f"in / "
        f"{args.output} out, one after the other; vLLM {info.version} ready after "
        f"{info.ready_s:.0f} s"
    )
    print(limits_line(refs[0][0], server.launch.settings, [v for vs in vllms for v in vs]))
    for (name, _), ref, vl in zip(workloads, refs, vllms):
        print(table(name, ref[0], vl[0]) if args.repeats == 1 else repeats_table(name, ref, vl))
    if args.baseline_set:
        print(f"baseline: the reference with {' '.join(args.baseline_set)}")
        for (name, _), ref, base in zip(workloads, refs, bases):
            print(repeats_table(name, ref, base, ("reference", "baseline")))
    return 0


def limits_line(ref: dict, settings: dict, vllms: list[dict]) -> str:
    """Both engines' scheduling limits (like for like: harness.engines.vllm.command.limits) and
    the prefix-cache hits of each vLLM run (0: the runs shared the server, reused nothing)."""
    slots = (ref.get("layout") or {}).get("kv_slots_per_replica")
    budget = ((ref.get("predicted") or {}).get("run") or {}).get("max_num_batched_tokens")
    hits = [(v.get("server_metrics") or {}).get("prefix_cache_hits") for v in vllms]
    return (
        f"limits: reference {slots} sequences in flight per replica, {budget} tokens per batch; "
        f"vLLM --max-num-seqs {settings.get('max_num_seqs')}, --max-num-batched-tokens "
        f"{settings.get('max_num_batched_tokens')}, prefix cache "
        f"{'on' if settings.get('prefix_caching') else 'off'} (hits per vLLM run: {hits})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
