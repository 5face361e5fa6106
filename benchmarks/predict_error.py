"""The forecast's error on unseen workloads of the CPU demo (harness predict, issue #17).

    .venv/bin/python benchmarks/predict_error.py [--config configs/tiny-tp2-pp4-cpu.yaml]
        [--requests 144] [--rate 4] [--unseen-rate 2] [--concurrency 8] [--extra-rate R ...]
        [--set FIELD=VALUE ...] [--out DIR]

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

Intervals (issue 25 item 6): every forecast carries each metric's ``--level`` prediction interval
(default 90 %, ``harness predict``'s draws); each check records whether the measurement fell inside
and the interval's half-width relative to the point. The forecast goal: at least 90 % of the
measured medians (TTFT, TPOT, ITL, E2E) over every check (unseen workloads and controls) inside
their 90 % intervals, no interval wider than ±25 %; the coverage is printed with its n and its
Clopper–Pearson 95 % interval. Then, retrospectively, every check again with ``harness predict
--history``: the host's run-to-run spread of mean ITL over the benchmark's other calibration runs
(before and after the check; never the check's own measured run) widens its intervals; the same
coverage and widths are printed for those.

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
    ("median_itl_ms", "ITL median (ms)"),
)
GOAL_KEYS = ("median_ttft_ms", "median_tpot_ms", "request_throughput")
MEDIANS = ("median_ttft_ms", "median_tpot_ms", "median_itl_ms", "median_e2el_ms")
WIDTH_GOAL, COVERAGE_GOAL = 0.25, 0.90


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
    ap.add_argument("--level", type=float, default=0.9, help="the forecast intervals' level")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a spec override for every run and forecast (e.g. run.cpu_all_reduce=gloo)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from harness.predict.closure import calibrated
    from harness.predict.forecast import errors_vs, forecast
    from harness.spec.spec import load_spec

    out = Path(args.out or tempfile.mkdtemp(prefix="predict-error-"))
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config)
    base = [f"workload.num_requests={args.requests}", *args.set]
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
        spec = load_spec(config, [*base, *sets])
        pred = forecast(spec, calib["run_dir"], model=model, level=args.level)
        measured = harness_run(config, run_dir, [*base, *sets])
        return {
            "calibration": calib["run_dir"],
            "measured": measured,
            "predicted": pred["metrics"],
            "errors": errors_vs(pred["metrics"], measured["metrics"], [k for k, _ in KEYS]),
            "intervals": judged(pred, measured["metrics"]),
            "intervals_wall_s": pred["intervals"]["wall_s"],
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
    (out / "predict_error.json").write_text(
        json.dumps({"unseen": results, "controls": controls}, indent=1, default=str)
    )  # the runs are safe before the retrospective below
    # retrospective: each check's intervals again, widened by the host's run-to-run spread over
    # the benchmark's other calibrations (never the check's own measured run)
    by_dir = {c["run_dir"]: m for c, m in zip(calibs, models)}
    cal_dirs = sorted(str(p) for p in out.glob("calibration-*") if (p / "summary.json").exists())
    retro = {}
    for name, r in {**results, **controls}.items():
        hist = history_of(out / "history" / name.split(":")[0].replace(" ", "-"), cal_dirs, r)
        spec = load_spec(config, r["measured"]["sets"])
        pred = forecast(
            spec, r["calibration"], model=by_dir[r["calibration"]], level=args.level, history=hist
        )
        retro[name] = {
            "measured": r["measured"],
            "predicted": pred["metrics"],
            "intervals": judged(pred, r["measured"]["metrics"]),
            "sources": pred["intervals"]["sources"],
        }
    cover_hist = coverage(
        {k: v for k, v in retro.items() if k in results},
        {k: v for k, v in retro.items() if k in controls},
        args.level,
    )
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
    big_fc = forecast(big, calibs[0]["run_dir"], model=model, draws=0)  # the simulation alone
    sim_1000_s = time.perf_counter() - t0
    cover = coverage(results, controls, args.level)
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "coverage": cover,
        "coverage_with_history": cover_hist,
        "with_history": retro,
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
        print(
            f"  {'metric':22}{'predicted':>11}{f'{args.level:.0%} interval':>22}{'measured':>11}"
            f"{'inside':>8}{'error':>9}"
        )
        for k, label in KEYS:
            p, m, e = r["predicted"].get(k), r["measured"]["metrics"].get(k), r["errors"].get(k)
            goal = "  (goal 15 %)" if k in GOAL_KEYS and name in results else ""
            err = "-" if e is None else f"{e * 100:+.1f} %"
            iv = r["intervals"].get(k) or {}
            span = f"[{iv.get('low') or 0:.4g}, {iv.get('high') or 0:.4g}]" if iv else "-"
            ins = {True: "yes", False: "NO", None: "-"}[iv.get("inside")]
            print(f"  {label:22}{p:>11.4g}{span:>22}{m:>11.4g}{ins:>8}{err:>9}{goal}")
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
        f"forecast intervals: {cover['inside']} of {cover['n']} measured medians inside their "
        f"{args.level:.0%} intervals ({cover['fraction']:.0%}, 95 % CI "
        f"{cover['ci'][0]:.0%}–{cover['ci'][1]:.0%}); half-widths "
        f"{cover['half_width_min']:.1%}–{cover['half_width_max']:.1%} (median "
        f"{cover['half_width_median']:.1%}); goal (≥ {COVERAGE_GOAL:.0%} inside, none wider than "
        f"±{WIDTH_GOAL:.0%}): {'met' if cover['met'] else 'NOT met'}"
    )
    print(
        f"with the host's spread over the other calibrations (--history, retrospective): "
        f"{cover_hist['inside']} of {cover_hist['n']} inside ({cover_hist['fraction']:.0%}, 95 % "
        f"CI {cover_hist['ci'][0]:.0%}–{cover_hist['ci'][1]:.0%}); half-widths "
        f"{cover_hist['half_width_min']:.1%}–{cover_hist['half_width_max']:.1%} (median "
        f"{cover_hist['half_width_median']:.1%}): {'met' if cover_hist['met'] else 'NOT met'}"
    )
    print(
        f"simulation of {big_fc['simulation']['requests']} requests "
        f"({big_fc['simulation']['steps']} steps): "
        f"{sim_1000_s:.2f} s (goal < 10 s)"
    )
    print(f"results: {out / 'predict_error.json'}")
    return 0


def judged(pred: dict, measured: dict) -> dict:
    """Per key: the forecast's interval, whether the measurement fell inside, its half-width."""
    from harness.measure.prediction import half_width, inside

    ivs = pred["intervals"]["metrics"]
    return {
        k: {
            **ivs[k],
            "inside": inside(ivs[k], measured.get(k)),
            "half_width": half_width(ivs[k], pred["metrics"].get(k)),
        }
        for k, _ in KEYS
        if k in ivs
    }


def history_of(folder: Path, cal_dirs: list[str], check: dict) -> str:
    """A history folder for ``check``: the summaries of every calibration run except the check's
    own calibration and its measured run (``harness predict --history`` reads summary, spec and
    env only)."""
    import shutil

    for d in cal_dirs:
        if d in (check["calibration"], check["measured"]["run_dir"]):
            continue
        (folder / Path(d).name).mkdir(parents=True, exist_ok=True)
        for f in ("summary.json", "spec.yaml", "env.json"):
            shutil.copy(Path(d) / f, folder / Path(d).name / f)
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def coverage(results: dict, controls: dict, level: float) -> dict:
    """The forecast goal's numbers over every check: medians inside their intervals (count, n,
    fraction with its Clopper–Pearson 95 % interval) and the intervals' half-widths."""
    from scipy.stats import binomtest

    rows = [
        (name, k, r["intervals"][k])
        for name, r in {**results, **controls}.items()
        for k in MEDIANS
        if k in r["intervals"] and r["intervals"][k]["inside"] is not None
    ]
    hits = sum(bool(iv["inside"]) for _, _, iv in rows)
    widths = [iv["half_width"] for _, _, iv in rows if iv["half_width"] is not None]
    n = len(rows)
    ci = binomtest(hits, n).proportion_ci(0.95) if n else None
    return {
        "level": level,
        "keys": list(MEDIANS),
        "inside": hits,
        "n": n,
        "fraction": hits / n if n else None,
        "ci": [ci.low, ci.high] if ci else None,
        "half_width_min": min(widths, default=None),
        "half_width_median": sorted(widths)[len(widths) // 2] if widths else None,
        "half_width_max": max(widths, default=None),
        "outside": [f"{name}: {k}" for name, k, iv in rows if not iv["inside"]],
        "met": bool(n)
        and hits / n >= COVERAGE_GOAL
        and all(w <= WIDTH_GOAL for w in widths)
        and len(widths) == n,
    }


if __name__ == "__main__":
    raise SystemExit(main())
