"""Do verdicts hold still when nothing changed, and move when something did?

K identical runs of the README's main command (the CPU demo), every pair compared with
``harness compare`` (BASE = the earlier run): each REGRESSION is a false one. Then runs with a real
slowdown on the NEW side, compared with every identical run: each REGRESSION is a detection.
Slowdowns: ``burn`` — a process spinning on one core for the whole run (the machine has two);
``config`` — ``--set`` overrides that cost TTFT (default: ``run.max_batch=2``, fewer sequences per
micro-batch, so arrivals wait for a slot). Beside each count, what the point rule of earlier
versions (any row's change beyond the threshold, no interval) would have called on the same pairs,
and every run's SLO verdict.

    flock /tmp/harness-heavy.lock .venv/bin/python benchmarks/verdict_stability.py \\
        --identical 5 --burn 3 --config-runs 3 --out results/verdict_stability.json

Timing on a shared machine: the load (``uptime``) before and after is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.results.reader import load_run  # noqa: E402
from harness.verdicts.compare import compare_runs  # noqa: E402

DEMO = REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def burner() -> subprocess.Popen:
    """One process spinning on a core until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def one_run(run_dir: Path, overrides: list[str], burn: bool) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(DEMO), "--results-dir", str(run_dir)]
    cmd += ["--no-report"] + [x for o in overrides for x in ("--set", o)]
    spinner = burner() if burn else None
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    wall = time.monotonic() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary.get("metrics") or {}
    return {
        "run_dir": str(run_dir),
        "exit_code": p.returncode,
        "wall_s": round(wall, 1),
        "verdict": summary.get("verdict"),
        "slo": [(r["target"], r.get("verdict")) for r in summary.get("slo") or []],
        "median_ttft_ms": m.get("median_ttft_ms"),
        "p99_ttft_ms": m.get("p99_ttft_ms"),
        "mean_tpot_ms": m.get("mean_tpot_ms"),
        "request_throughput": m.get("request_throughput"),
    }


def compare(base: str, new: str, threshold: float, history: list[str] = ()) -> dict:
    """``harness compare BASE NEW``; ``history``: earlier runs of the same system whose run-to-run
    spread widens the intervals (what ``--history DIR`` gives the nightly job)."""
    past = [load_run(h, tables=False).summary for h in history]
    cmp = compare_runs(
        load_run(base, ("requests",)), load_run(new, ("requests",)), threshold, history=past
    )
    point = [
        r.key
        for r in cmp.rows
        if r.delta_pct is not None
        and r.better != "info"
        and (r.delta_pct > threshold if r.better == "lower" else r.delta_pct < -threshold)
    ]
    return {
        "base": base,
        "new": new,
        "verdict": cmp.verdict,
        "regressions": [r.key for r in cmp.regressions],
        "point_rule_regressions": point,
        "rows": {r.key: r.verdict for r in cmp.rows},
    }


def analyse(out: dict, threshold: float) -> None:
    """Every pair compared twice: from the two runs' requests alone, and with the identical runs
    other than NEW as the history (BASE among them), as the nightly job's ``--history`` gives it."""
    runs = out["runs"]
    same = [r["run_dir"] for r in runs["identical"]]
    pairs: dict[str, list[tuple[str, str]]] = {
        "identical": list(itertools.combinations(same, 2)),
        "burn": [(a, r["run_dir"]) for a in same for r in runs["burn"]],
        "config": [(a, r["run_dir"]) for a in same for r in runs["config"]],
    }
    out["pairs"], out["summary"] = {}, {}
    for mode in ("requests only", "with history"):
        for kind, ps in pairs.items():
            done = [
                compare(
                    a, b, threshold, [h for h in same if h != b] if mode == "with history" else []
                )
                for a, b in ps
            ]
            out["pairs"][f"{kind}, {mode}"] = done
            out["summary"][f"{kind}, {mode}"] = {
                "pairs": len(done),
                "regression": sum(p["verdict"] == "REGRESSION" for p in done),
                "inconclusive": sum(p["verdict"] == "INCONCLUSIVE" for p in done),
                "point_rule_regression": sum(bool(p["point_rule_regressions"]) for p in done),
            }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identical", type=int, default=5, help="identical runs (pairs: K(K-1)/2)")
    ap.add_argument("--burn", type=int, default=3, help="runs with one core burned")
    ap.add_argument("--config-runs", type=int, default=3, help="runs with --slow-set")
    ap.add_argument("--slow-set", action="append", default=None, help="override of a slow run")
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--root", default=None, help="where the runs go (default results/stability-*)")
    ap.add_argument("--out", default=None, help="JSON of every run and pair")
    ap.add_argument(
        "--reanalyse",
        metavar="JSON",
        default=None,
        help="compare the runs of an earlier --out again",
    )
    args = ap.parse_args()
    if args.reanalyse:
        out = json.loads(Path(args.reanalyse).read_text())
        analyse(out, args.threshold)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out["summary"], indent=1))
        return 0
    slow_set = args.slow_set or ["run.max_batch=2"]
    root = Path(args.root or REPO / "results" / time.strftime("stability-%Y%m%dT%H%M%S"))
    root.mkdir(parents=True, exist_ok=False)
    out = {"uptime_before": uptime(), "threshold_pct": args.threshold, "slow_set": slow_set}
    runs: dict[str, list[dict]] = {"identical": [], "burn": [], "config": []}
    plan = (
        [("identical", [], False)] * args.identical
        + [("burn", [], True)] * args.burn
        + [("config", slow_set, False)] * args.config_runs
    )
    for i, (kind, overrides, burn) in enumerate(plan):
        r = one_run(root / f"{i:02d}-{kind}", overrides, burn)
        runs[kind].append(r)
        print(f"run {i} {kind}: exit {r['exit_code']}, {r['verdict']}, {r['wall_s']} s", flush=True)
    out.update(runs=runs, uptime_after=uptime())
    analyse(out, args.threshold)
    out["verdicts"] = {k: [r["verdict"] for r in v] for k, v in runs.items()}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(json.dumps({"summary": out["summary"], "verdicts": out["verdicts"]}, indent=1))
    print(out["uptime_before"], "|", out["uptime_after"])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
