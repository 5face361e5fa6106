"""How much do identical runs differ on this host, and does a setting change that?

Rounds of identical runs of the CPU demo, one run per variant per round, variants alternating so a
host's slow phase falls on all of them. Per variant: every run's mean ITL and median TPOT, the
geometric mean, and the run-to-run s.d. of ln(mean ITL) with its 95 % interval (chi-square, n − 1
degrees of freedom). A forecast of the next run cannot be narrower than that spread, so this is
what a calibration for ``harness predict`` needs small (docs/performance.md, "The host's spread
between identical runs"). Per round, each variant's mean ITL over the first variant's.

    flock /tmp/harness-heavy.lock .venv/bin/python benchmarks/run_spread.py --rounds 4 \\
        --variant shm --variant gloo=run.cpu_all_reduce=gloo --out DIR

The default workload is the predict-error benchmark's calibration (Poisson 4/s, 144 requests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.measure.special import chi2_ppf  # noqa: E402

DEMO = REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"
WORKLOAD = ["workload.num_requests=144", "workload.arrival=poisson", "workload.rate_rps=4"]


def one_run(config: Path, run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(run_dir)]
    cmd += ["--no-report"] + [x for s in sets for x in ("--set", s)]
    load0, t0 = os.getloadavg()[0], time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    if not summary.get("complete"):
        sys.exit(f"run_spread: run {run_dir} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    m = summary["metrics"]
    return {
        "run_dir": str(run_dir),
        "mean_itl_ms": m["mean_itl_ms"],
        "median_tpot_ms": m["median_tpot_ms"],
        "load_before": load0,
        "wall_s": time.monotonic() - t0,
        "cpu_cores": (summary.get("hardware") or {}).get("cpu_cores"),
    }


def spread(values: list[float]) -> dict:
    """Geometric mean and the s.d. of ln with its 95 % chi-square interval."""
    logs = [math.log(v) for v in values]
    n = len(logs)
    mu = sum(logs) / n
    out = {"runs": n, "geometric_mean": math.exp(mu), "sd_ln": None, "sd_ln_95": None}
    if n >= 2:
        ss = sum((x - mu) ** 2 for x in logs)
        out["sd_ln"] = math.sqrt(ss / (n - 1))
        out["sd_ln_95"] = [
            math.sqrt(ss / chi2_ppf(0.975, n - 1)),
            math.sqrt(ss / chi2_ppf(0.025, n - 1)),
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=str(DEMO))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME[=FIELD=VALUE[,FIELD=VALUE]]",
        help="a variant's name and its overrides (none: the spec as it is); the first is the "
        "reference of the ratio",
    )
    ap.add_argument(
        "--set", action="append", default=[], help="an override for every run (the workload)"
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    variants = {}
    for v in args.variant:
        name, _, sets = v.partition("=")
        if not name or name in variants:
            ap.error(f"--variant {v!r}: give a new NAME[=FIELD=VALUE[,FIELD=VALUE]]")
        variants[name] = [s for s in sets.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for k in range(args.rounds):
        for name, sets in variants.items():
            r = one_run(Path(args.config), out / f"{name}-{k}", [*WORKLOAD, *args.set, *sets])
            runs[name].append(r)
            print(f"round {k} {name}: mean ITL {r['mean_itl_ms']:.1f} ms", flush=True)
    first = next(iter(variants))
    report = {"command": " ".join([sys.executable, *sys.argv]), "variants": {}}
    for name in variants:
        itl = [r["mean_itl_ms"] for r in runs[name]]
        report["variants"][name] = {
            "sets": variants[name],
            "runs": runs[name],
            "mean_itl": spread(itl),
            "median_tpot": spread([r["median_tpot_ms"] for r in runs[name]]),
            "cost_vs_first": [a / b["mean_itl_ms"] for a, b in zip(itl, runs[first])],
        }
    tmp = out / "run_spread.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out / "run_spread.json")
    print(
        "\n| variant | runs | mean ITL (ms), each | geometric mean | s.d. of ln [95 %] "
        f"| / {first} |"
    )
    print("|---|---|---|---|---|---|")
    for name, v in report["variants"].items():
        s = v["mean_itl"]
        sd = (
            f"{s['sd_ln']:.3f} [{s['sd_ln_95'][0]:.3f}, {s['sd_ln_95'][1]:.3f}]"
            if s["sd_ln"] is not None
            else "—"
        )
        each = ", ".join(f"{r['mean_itl_ms']:.1f}" for r in v["runs"])
        cost = ", ".join(f"{c:.2f}" for c in v["cost_vs_first"])
        print(f"| {name} | {s['runs']} | {each} | {s['geometric_mean']:.1f} | {sd} | {cost} |")


if __name__ == "__main__":
    main()
