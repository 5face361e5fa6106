"""The forecast's error on unseen workloads of the CPU demo (harness predict, issue #17).

    .venv/bin/python benchmarks/predict_error.py [--config configs/tiny-tp2-pp4-cpu.yaml]
        [--requests 144] [--rate 4] [--unseen-rate 2] [--concurrency 8] [--extra-rate R ...] [--out
        DIR]

For each unseen workload — Poisson at ``--unseen-rate``, a closed loop of ``--concurrency``, and any
``--extra-rate`` — in turn:
1. runs the demo at ``--rate`` (Poisson): a calibration, always the same workload;
2. forecasts the unseen workload from that calibration's tables alone (``harness predict``'s
   model: fit, closure on the calibration's own mean ITL, simulation), before it runs;
3. runs it and compares: predicted, measured and the error (predicted − measured) / measured of
   median TTFT, median TPOT and request throughput (goal: within 15 % on both unseen workloads),
   with every extrapolation the forecast flagged.
Each forecast comes from the calibration run just before it: on this shared host the machine's
speed drifts by 20–35 % over minutes with no change of workload (docs/performance.md), and a
calibration minutes older than its check measures that drift as much as the model. After the last
pair one more calibration runs; every calibration is also forecast from the one before it — the
**controls**: the same workload, so their error is the host's drift over one pair (what a perfect
model would still show). Last, the simulation of a 1000-request workload is timed (goal: under
10 s).

The load average is recorded around each run. Writes ``predict_error.json`` (and every run
directory) in ``--out`` (default: a temporary folder)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KEYS = (
    ("median_ttft_ms", "TTFT median (ms)"),
    ("median_tpot_ms", "TPOT median (ms)"),
    ("request_throughput", "throughput (req/s)"),
    ("p99_ttft_ms", "TTFT p99 (ms)"),
    ("p99_tpot_ms", "TPOT p99 (ms)"),
    ("median_e2el_ms", "E2E median (ms)"),
)
GOAL_KEYS = ("median_ttft_ms", "median_tpot_ms", "request_throughput")


def harness_run(config: Path, run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    load0, t0 = os.getloadavg()[0], time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").exists()
        else {}
    )
    if not summary.get("complete"):
        sys.exit(f"predict_error: run {run_dir} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return {
        "run_dir": str(run_dir),
        "sets": sets,
        "metrics": summary["metrics"],
        "wall_s": time.monotonic() - t0,
        "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"))
    ap.add_argument(
        "--requests",
        type=int,
        default=144,
        help="per run; 48 runs are too short to average this host's run-to-run spread",
    )
    ap.add_argument("--rate", type=float, default=4.0, help="the calibration run's Poisson rate")
    ap.add_argument("--unseen-rate", type=float, default=2.0)
    ap.add_argument(
        "--concurrency", type=int, default=8, help="the unseen closed loop's concurrency"
    )
    ap.add_argument(
        "--extra-rate", type=float, action="append", default=[], help="more unseen rates (optional)"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from harness.predict.closure import calibrated
    from harness.predict.forecast import errors_vs, forecast
    from harness.spec.spec import load_spec

    out = Path(args.out or tempfile.mkdtemp(prefix="predict-error-"))
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config)
    base = [f"workload.num_requests={args.requests}"]
    calib_sets = [*base, "workload.arrival=poisson", f"workload.rate_rps={args.rate}"]
    unseen = {
        f"poisson {args.unseen_rate}/s": [
            "workload.arrival=poisson",
            f"workload.rate_rps={args.unseen_rate}",
        ],
        f"closed loop {args.concurrency}": [
            "workload.arrival=closed",
            f"workload.concurrency={args.concurrency}",
        ],
    }
    for r in args.extra_rate:
        unseen[f"poisson {r}/s"] = ["workload.arrival=poisson", f"workload.rate_rps={r}"]

    def check(sets: list[str], run_dir: Path, calib: dict, model) -> dict:
        # before it runs
        pred = forecast(load_spec(config, [*base, *sets]), calib["run_dir"], model=model)
        measured = harness_run(config, run_dir, [*base, *sets])
        return {
            "calibration": calib["run_dir"],
            "measured": measured,
            "predicted": pred["metrics"],
            "errors": errors_vs(pred["metrics"], measured["metrics"], [k for k, _ in KEYS]),
            "extrapolation": pred["extrapolation"],
            "closure": model.closure,
        }

    results, controls, calibs, models = {}, {}, [], []
    calib = harness_run(config, out / "calibration-0", calib_sets)
    for i, (name, sets) in enumerate(unseen.items()):
        calibs.append(calib)
        model = calibrated(calib["run_dir"], load_spec(config, base))
        models.append(model)
        results[name] = check(sets, out / f"unseen-{i}", calib, model)
        ctrl = f"control {i}: calibration-{i + 1} from calibration-{i}"
        controls[ctrl] = check(calib_sets[len(base) :], out / f"calibration-{i + 1}", calib, model)
        calib = controls[ctrl]["measured"]
    model = models[0]
    big = load_spec(
        config,
        [
            "workload.num_requests=1000",
            "workload.arrival=poisson",
            f"workload.rate_rps={args.rate}",
        ],
    )
    t0 = time.perf_counter()
    big_fc = forecast(big, calibs[0]["run_dir"], model=model)
    sim_1000_s = time.perf_counter() - t0
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "calibrations": calibs,
        "unseen": results,
        "controls": controls,
        "sim_1000": {
            "wall_s": sim_1000_s,
            "requests": big_fc["simulation"]["requests"],
            "steps": big_fc["simulation"]["steps"],
            "goal_s": 10.0,
        },
        "model_of_calibration_0": model.to_dict(),
    }
    (out / "predict_error.json").write_text(json.dumps(report, indent=1, default=str))
    print(
        f"calibrations: poisson {args.rate}/s, {args.requests} requests, each just before its check"
    )
    for name, r in {**results, **controls}.items():
        print(
            f"\n{name} (load {r['measured']['load_avg']}; calibrated on "
            f"{Path(r['calibration']).name}, "
            f"closure × {r['closure'].get('factor', 1.0):.3f})"
        )
        print(f"  {'metric':22}{'predicted':>11}{'measured':>11}{'error':>9}")
        for k, label in KEYS:
            p, m, e = r["predicted"].get(k), r["measured"]["metrics"].get(k), r["errors"].get(k)
            goal = "  (goal 15 %)" if k in GOAL_KEYS and name in results else ""
            err = "-" if e is None else f"{e * 100:+.1f} %"
            print(f"  {label:22}{p:>11.4g}{m:>11.4g}{err:>9}{goal}")
        flags = (
            ", ".join(
                f"stage {x['stage']} {x['feature']} +{x['beyond_pct']:.0f} %"
                for x in r["extrapolation"]
            )
            or "none"
        )
        print(f"  extrapolated: {flags}")
    met = all(
        r["errors"][k] is not None and abs(r["errors"][k]) <= 0.15
        for r in results.values()
        for k in GOAL_KEYS
    )
    print(
        f"\ngoal (median TTFT, median TPOT, throughput within 15 % on every unseen workload): "
        f"{'met' if met else 'NOT met'}"
    )
    print(
        f"simulation of {big_fc['simulation']['requests']} requests "
        f"({big_fc['simulation']['steps']} steps): "
        f"{sim_1000_s:.2f} s (goal < 10 s)"
    )
    print(f"results: {out / 'predict_error.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
