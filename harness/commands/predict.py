"""``harness predict CONFIG --from RUN_DIR|EMULATE_JSON``: calibrated forecast of CONFIG's workload.

Fits per-stage step costs from a run's steps/stages tables (or a ``harness emulate`` JSON), serves
CONFIG's workload (after ``--set``) through the reference engine's own scheduler and serving loop
on a simulated clock, and prints the summary's metrics and SLO verdicts, the fit's residuals and
every feature the forecast drives beyond the measured range (harness/predict/). ``--out FILE``
writes the JSON atomically; ``harness report RUN --predicted FILE`` (or ``prediction.json`` in the
run directory) shows it beside the bound and the measurement.

Exit: 0 forecast made; 2 bad input (missing run dir, a run without the tables, an emulate JSON of
another model or layout), before anything is simulated."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML: the deployment and workload to forecast")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="RUN_DIR|EMULATE_JSON",
        help="calibrate from this run directory (reference engine) or `harness emulate --out` JSON",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field of CONFIG, e.g. --set workload.rate_rps=8 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the forecast JSON here (atomically)")


def main(args: argparse.Namespace) -> int:
    from harness.predict.forecast import forecast
    from harness.results.atomic import atomic_write_json, clean_floats
    from harness.spec.spec import load_spec

    spec = load_spec(args.config, args.overrides)
    out = forecast(spec, args.source)
    if args.out:
        atomic_write_json(args.out, out)
    if args.json:
        sys.stdout.write(json.dumps(clean_floats(out), indent=1) + "\n")
    else:
        sys.stdout.write(render(out))
    return 0


def _f(v, fmt: str = ".3g", scale: float = 1.0) -> str:
    return "-" if v is None or v != v else format(v * scale, fmt)


def render(p: dict) -> str:
    m, lay, wl = p["metrics"], p["layout"], p["workload"]
    load = (
        f"closed loop, concurrency {wl['concurrency']}"
        if wl["arrival"] == "closed"
        else f"{wl['arrival']} {wl['rate_rps']} req/s"
        + (f", at most {wl['max_concurrency']} in flight" if wl.get("max_concurrency") else "")
    )
    lines = [
        f"harness predict: {p['name']} TP{lay['tp']}-PP{lay['pp']}-DP{lay['dp']}, {load}, "
        f"{wl['num_requests']} requests — {p['label']}",
        f"  {p['checked']}",
        f"  {'metric':24}{'mean':>10}{'median':>10}{'p99':>10}",
    ]
    for name, key in (
        ("TTFT (ms)", "ttft"),
        ("TPOT (ms)", "tpot"),
        ("ITL (ms)", "itl"),
        ("E2E (ms)", "e2el"),
    ):
        lines.append(
            f"  {name:24}"
            + "".join(f"{_f(m.get(f'{st}_{key}_ms')):>10}" for st in ("mean", "median", "p99"))
        )
    send = p.get("metrics_from_send")
    if send:
        lines.append(
            f"  {'from the send':24}"
            + "".join(f"{_f(send.get(f'{st}_e2el_ms')):>10}" for st in ("mean", "median", "p99"))
            + f"  (E2E; the cap held requests at the client: mean client queue "
            f"{_f(send.get('mean_client_queue_ms'))} ms)"
        )
    lines.append(
        f"  throughput {_f(m.get('request_throughput'))} req/s, goodput "
        f"{_f(m.get('request_goodput'))} "
        f"req/s, output {_f(m.get('output_throughput'))} tok/s"
    )
    for r in p["slo"]:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[r["passed"]]
        lines.append(f"  SLO {r['target']:<26} {_f(r['measured']):>10}  {verdict}")
    lines.append(f"  overall: {p['verdict']}")
    lines.append("  fit per stage (s = c0 + c·features; residuals over the calibration steps):")
    for sc in p["model"]["stages"]:
        res = sc["residuals"] or {}
        coef = ", ".join(f"{k} {v:.3g}" for k, v in sc["coef"].items() if v)
        lines.append(
            f"    stage {sc['stage']} ({sc['source']}): c0 {sc['intercept_s'] * 1e3:.3g} ms"
            + (f", {coef}" if coef else "")
            + f"; n {res.get('n')}, RMSE {_f(res.get('rmse_s'), '.3g', 1e3)}"
            f" ms, |res|/mean {_f(res.get('rel_mae'), '.0%')}, R² {_f(res.get('r2'), '.2f')}, "
            f"dropped {res.get('dropped')}"
        )
    mdl = p["model"]
    lines.append(
        f"    return hop {mdl['return_s'] * 1e3:.3g} ms, coordinator {mdl['loop_s'] * 1e3:.3g} ms "
        f"per step"
    )
    cl = mdl.get("closure") or {}
    if cl.get("factor") is not None and not cl.get("skipped"):
        lines.append(
            f"    closure: every time × {cl['factor']:.3f} so the calibration's own {cl['metric']} "
            f"({_f(cl.get('measured'))}) is met ({100 * cl['error_before']:+.1f} % before, "
            f"{100 * cl['error_after']:+.1f} % after)"
        )
    for note in mdl.get("notes") or []:
        lines.append(f"    note: {note}")
    if p["extrapolation"]:
        lines.append("  EXTRAPOLATION beyond the measured range:")
        for e in p["extrapolation"]:
            lines.append(
                f"    stage {e['stage']} {e['feature']}: forecast {_f(e['forecast_range'][0])}.."
                f"{_f(e['forecast_range'][1])}, fitted on {_f(e['fitted_range'][0])}.."
                f"{_f(e['fitted_range'][1])} ({_f(e.get('beyond_pct'), '.0f')} % of the range "
                f"beyond it)"
            )
    else:
        lines.append("  within the measured range (no extrapolation)")
    sim = p["simulation"]
    lines.append(
        f"  simulated {sim['requests']} requests, {sim['steps']} steps, {sim['simulated_s']:.3g} s "
        f"of serving, × {sim.get('replications', 1)} replications (metrics: their mean) in "
        f"{sim['wall_s']:.2f} s"
    )
    return "\n".join(lines) + "\n"
