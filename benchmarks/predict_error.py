"""The forecast's error on unseen workloads of the CPU demo (harness predict, issue #17).

    .venv/bin/python benchmarks/predict_error.py [--config configs/tiny-tp2-pp4-cpu.yaml]
        [--requests 48] [--rate 4] [--unseen-rate 2] [--concurrency 8] [--extra-rate R ...] [--out DIR]

1. runs the demo once at ``--rate`` (Poisson): the calibration;
2. forecasts, from that run's tables alone, the unseen workloads — Poisson at ``--unseen-rate`` and a
   closed loop of ``--concurrency`` (plus any ``--extra-rate``), before they run;
3. runs each of them (one 8-rank world at a time) and prints predicted, measured and the error
   (predicted − measured) / measured of median TTFT, median TPOT and request throughput
   (goal: within 15 % on both unseen workloads), with every extrapolation the forecast flagged;
4. runs the calibration workload once more, last, against its own forecast: the host's drift over
   the benchmark (the error a perfect model would still show on this machine);
5. times the simulation of a 1000-request workload on the same calibration (goal: under 10 s).

The load average is recorded around each run: on a shared host a forecast calibrated in a quiet
minute and checked in a busy one is off by the host's change, not by the model. Writes
``predict_error.json`` (and every run directory) in ``--out`` (default: a temporary folder).
"""

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
KEYS = (("median_ttft_ms", "TTFT median (ms)"), ("median_tpot_ms", "TPOT median (ms)"),
        ("request_throughput", "throughput (req/s)"), ("p99_ttft_ms", "TTFT p99 (ms)"),
        ("p99_tpot_ms", "TPOT p99 (ms)"), ("median_e2el_ms", "E2E median (ms)"))
GOAL_KEYS = ("median_ttft_ms", "median_tpot_ms", "request_throughput")


def harness_run(config: Path, run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    load0, t0 = os.getloadavg()[0], time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    if not summary.get("complete"):
        sys.exit(f"predict_error: run {run_dir} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return {"run_dir": str(run_dir), "sets": sets, "metrics": summary["metrics"], "wall_s": time.monotonic() - t0,
            "load_avg": [round(load0, 1), round(os.getloadavg()[0], 1)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"))
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--rate", type=float, default=4.0, help="the calibration run's Poisson rate")
    ap.add_argument("--unseen-rate", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=8, help="the unseen closed loop's concurrency")
    ap.add_argument("--extra-rate", type=float, action="append", default=[], help="more unseen rates (optional)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from harness.predict.calibrate import calibrate
    from harness.predict.forecast import errors_vs, forecast
    from harness.spec.spec import load_spec

    out = Path(args.out or tempfile.mkdtemp(prefix="predict-error-"))
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config)
    base = [f"workload.num_requests={args.requests}"]
    calib = harness_run(config, out / "calibration", [*base, "workload.arrival=poisson",
                                                      f"workload.rate_rps={args.rate}"])
    unseen = {f"poisson {args.unseen_rate}/s": ["workload.arrival=poisson", f"workload.rate_rps={args.unseen_rate}"],
              f"closed loop {args.concurrency}": ["workload.arrival=closed",
                                                  f"workload.concurrency={args.concurrency}"]}
    for r in args.extra_rate:
        unseen[f"poisson {r}/s"] = ["workload.arrival=poisson", f"workload.rate_rps={r}"]
    unseen[f"control: poisson {args.rate}/s again"] = ["workload.arrival=poisson", f"workload.rate_rps={args.rate}"]
    model = calibrate(calib["run_dir"], load_spec(config, base))
    forecasts = {name: forecast(load_spec(config, [*base, *sets]), calib["run_dir"], model=model)
                 for name, sets in unseen.items()}          # made before any unseen workload runs
    big = load_spec(config, ["workload.num_requests=1000", "workload.arrival=poisson",
                             f"workload.rate_rps={args.rate}"])
    t0 = time.perf_counter()
    big_fc = forecast(big, calib["run_dir"], model=model)
    sim_1000_s = time.perf_counter() - t0
    results = {}
    for i, (name, sets) in enumerate(unseen.items()):
        measured = harness_run(config, out / f"unseen-{i}", [*base, *sets])
        pred = forecasts[name]
        results[name] = {"measured": measured, "predicted": pred["metrics"],
                         "errors": errors_vs(pred["metrics"], measured["metrics"], [k for k, _ in KEYS]),
                         "extrapolation": pred["extrapolation"]}
    report = {"command": " ".join([sys.executable, *sys.argv]), "calibration": calib, "unseen": results,
              "sim_1000": {"wall_s": sim_1000_s, "requests": big_fc["simulation"]["requests"],
                           "steps": big_fc["simulation"]["steps"], "goal_s": 10.0},
              "model": model.to_dict()}
    (out / "predict_error.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"calibration: poisson {args.rate}/s, {args.requests} requests, load {calib['load_avg']}")
    for name, r in results.items():
        print(f"\n{name} (load {r['measured']['load_avg']})")
        print(f"  {'metric':22}{'predicted':>11}{'measured':>11}{'error':>9}")
        for k, label in KEYS:
            p, m, e = r["predicted"].get(k), r["measured"]["metrics"].get(k), r["errors"].get(k)
            goal = "  (goal 15 %)" if k in GOAL_KEYS else ""
            print(f"  {label:22}{p:>11.4g}{m:>11.4g}{'-' if e is None else f'{e * 100:+.1f} %':>9}{goal}")
        flags = ", ".join(f"stage {x['stage']} {x['feature']} +{x['beyond_pct']:.0f} %"
                          for x in r["extrapolation"]) or "none"
        print(f"  extrapolated: {flags}")
    met = all(abs(r["errors"][k]) <= 0.15 for name, r in results.items() for k in GOAL_KEYS
              if r["errors"][k] is not None and not name.startswith("control"))
    print(f"\ngoal (median TTFT, median TPOT, throughput within 15 % on every unseen workload): "
          f"{'met' if met else 'NOT met'}")
    print(f"simulation of {big_fc['simulation']['requests']} requests ({big_fc['simulation']['steps']} steps): "
          f"{sim_1000_s:.2f} s (goal < 10 s)")
    print(f"results: {out / 'predict_error.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
