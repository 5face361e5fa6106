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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from harness.measure.special import chi2_ppf  # noqa: E402
from harness.verdicts.change import log_spread  # noqa: E402
from predict_error import harness_run  # noqa: E402

DEMO = REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"
WORKLOAD = ["workload.num_requests=144", "workload.arrival=poisson", "workload.rate_rps=4"]


def spread(values: list[float]) -> dict:
    """Geometric mean and the s.d. of ln (``log_spread``: 3 runs or more) with its 95 %
    chi-square interval."""
    out = {"runs": len(values), "geometric_mean": None, "sd_ln": None, "sd_ln_95": None}
    got = log_spread(values)
    if got is not None:
        m, s, k = got
        ss = s * s * (k - 1)
        out["geometric_mean"], out["sd_ln"] = math.exp(m), s
        out["sd_ln_95"] = [
            math.sqrt(ss / chi2_ppf(0.975, k - 1)),
            math.sqrt(ss / chi2_ppf(0.025, k - 1)),
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
            run = harness_run(Path(args.config), out / f"{name}-{k}", [*WORKLOAD, *args.set, *sets])
            r = {key: run[key] for key in ("run_dir", "wall_s", "load_avg")}
            r["mean_itl_ms"], r["median_tpot_ms"] = (
                run["metrics"]["mean_itl_ms"],
                run["metrics"]["median_tpot_ms"],
            )
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
            else "— (fewer than 3 runs)"
        )
        geo = "—" if s["geometric_mean"] is None else f"{s['geometric_mean']:.1f}"
        each = ", ".join(f"{r['mean_itl_ms']:.1f}" for r in v["runs"])
        cost = ", ".join(f"{c:.2f}" for c in v["cost_vs_first"])
        print(f"| {name} | {s['runs']} | {each} | {geo} | {sd} | {cost} |")


if __name__ == "__main__":
    main()
