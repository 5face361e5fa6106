"""``harness predict CONFIG --from RUN_DIR|EMULATE_JSON``: calibrated forecast of CONFIG's workload.

Fits per-stage step costs from a run's steps/stages tables (or a ``harness emulate`` JSON), serves
CONFIG's workload (after ``--set``) through the reference engine's own scheduler and serving loop
on a simulated clock, and prints the summary's metrics and SLO verdicts, the fit's residuals and
every feature the forecast drives beyond the measured range (harness/predict/). ``--out FILE``
writes the JSON atomically; ``harness report RUN --predicted FILE`` (or ``prediction.json`` in the
run directory) shows it beside the bound and the measurement, and whether each measurement fell
inside its interval. Every metric carries a prediction interval at ``--level`` (default 90 %): where
one run of CONFIG's workload will measure it, from ``--draws`` draws of the calibration's sampling
error and of the residuals (harness/predict/draws.py); ``--draws 0`` leaves them out;
``--history DIR`` adds the host's run-to-run spread from earlier runs of the calibration's spec.

Each SLO verdict is judged on its metric's interval (harness/predict/verdicts.py): PASS when the
whole interval meets the target, FAIL when it misses it, INCONCLUSIVE when it straddles the limit;
with ``--draws 0`` on the point forecast alone, and labelled so.

Exit: 0 forecast made, whatever its verdict (PASS, FAIL or INCONCLUSIVE: ``verdict`` in the JSON,
``overall:`` in the text): a forecast is not a run, and ``harness run``'s 1 and 4 report what a
measurement decided; 2 bad input (missing run dir, a run without the tables, an emulate JSON of
another model or layout), before anything is simulated."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    p.add_argument(
        "--level",
        type=float,
        default=None,
        help="level of each metric's prediction interval, in (0.5, 1) (default 0.9)",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=None,
        help="draws the intervals rest on (default: 2 beyond each end, 39 at 0.9; 0: no intervals)",
    )
    p.add_argument(
        "--history",
        metavar="DIR",
        help="earlier runs of the calibration's spec (any depth): their spread of mean ITL, the "
        "host's run-to-run variation, widens the intervals (from 3 runs with the calibration)",
    )
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the forecast JSON here (atomically)")


def interval_options(level: float | None, draws: int | None) -> tuple[float, int]:
    """``--level`` and ``--draws`` checked (UsageError: one line naming the flag and the fix)."""
    from harness.errors import UsageError
    from harness.measure.prediction import LEVEL, draws_for, prediction_ranks

    level = LEVEL if level is None else level
    if not 0.5 < level < 1.0:
        raise UsageError(f"--level {level}: must lie in (0.5, 1), e.g. --level 0.9")
    if draws is None:
        return level, draws_for(level)
    if draws < 0 or (draws and prediction_ranks(draws, level) is None):
        raise UsageError(
            f"--draws {draws}: a {level:g} interval needs at least {draws_for(level, 1)} draws "
            "(or 0: no intervals)"
        )
    return level, draws


def main(args: argparse.Namespace) -> int:
    from harness.errors import UsageError
    from harness.predict.forecast import forecast
    from harness.results.atomic import atomic_write_json, clean_floats
    from harness.spec.spec import load_spec

    level, draws = interval_options(args.level, args.draws)
    spec = load_spec(args.config, args.overrides)
    if args.history is not None and not Path(args.history).is_dir():
        raise UsageError(
            f"--history {args.history}: not a directory; give the folder of earlier runs"
        )
    out = forecast(spec, args.source, level=level, draws=draws, history=args.history)
    if args.out:
        atomic_write_json(args.out, out)
    if args.json:
        sys.stdout.write(json.dumps(clean_floats(out), indent=1) + "\n")
    else:
        sys.stdout.write(render(out))
    return 0


def _f(v, fmt: str = ".3g", scale: float = 1.0) -> str:
    return "-" if v is None or v != v else format(v * scale, fmt)


def _cell(m: dict, ivs: dict, key: str) -> str:
    """``value [low, high]`` (``-`` for an open end), or the value alone without an interval."""
    iv = ivs.get(key)
    if not iv:
        return _n(m.get(key))
    return f"{_n(m.get(key))} [{_n(iv.get('low'))}, {_n(iv.get('high'))}]"


def _n(v) -> str:
    """3 significant digits, whole numbers from 1000 on (no exponent in a table cell)."""
    return _f(v, ".0f") if v is not None and v == v and abs(v) >= 1000 else _f(v)


# What the overall verdict rests on (``verdict_basis``, harness.predict.verdicts).
BASIS_NOTE = {
    "interval": "from the intervals: PASS or FAIL only where a whole interval meets or misses its "
    "target, INCONCLUSIVE where one straddles it",
    "point": "on the point forecast only, without intervals (--draws 0): it states no certainty",
    "mixed": "partly on the point forecast only: some targets' metrics have no interval",
}


def slo_lines(p: dict) -> list[str]:
    """Per target: the point forecast [its interval], the verdict and its rule; then the overall
    verdict and what it rests on (rows written before the three-valued verdicts: ``passed``)."""
    from harness.report.slo_table import verdict_text

    lines = []
    for r in p["slo"]:
        value = _n(r.get("measured"))
        if r.get("basis") == "interval":
            value += f" [{_n(r.get('low'))}, {_n(r.get('high'))}]"
        rule = f" — {r['rule']}" if r.get("rule") else ""
        lines.append(f"  SLO {r['target']:<26} {value:>22}  {verdict_text(r)}{rule}")
    note = BASIS_NOTE.get(p.get("verdict_basis"))
    lines.append(f"  overall: {p['verdict']}" + (f" ({note})" if note else ""))
    return lines


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
    ]
    ivs = (p.get("intervals") or {}).get("metrics") or {}
    if ivs:
        iv = p["intervals"]
        lines.append(
            f"  each value [its {iv['level'] * 100:g} % prediction interval: where one run of this "
            f"workload will measure it; {iv['draws']} draws]"
        )
    lines.append(f"  {'metric':12}" + "".join(f"{h:>24}" for h in ("mean", "median", "p99")))
    for name, key in (
        ("TTFT (ms)", "ttft"),
        ("TPOT (ms)", "tpot"),
        ("ITL (ms)", "itl"),
        ("E2E (ms)", "e2el"),
    ):
        lines.append(
            f"  {name:12}"
            + "".join(f"{_cell(m, ivs, f'{st}_{key}_ms'):>24}" for st in ("mean", "median", "p99"))
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
        f"  throughput {_cell(m, ivs, 'request_throughput')} req/s, goodput "
        f"{_cell(m, ivs, 'request_goodput')} req/s, output {_cell(m, ivs, 'output_throughput')} "
        "tok/s"
    )
    if ivs:
        lines.append(
            f"  intervals from: {'; '.join(iv['sources'])}; not in them: {iv['not_included']}"
        )
    lines += slo_lines(p)
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
