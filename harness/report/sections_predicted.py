"""The report's "Predicted (calibrated) vs measured" section, when a ``harness predict`` forecast is
given (``harness report RUN --predicted FILE``) or the run directory holds ``prediction.json``.

Per metric: the planner's bound (a floor for latencies, a ceiling for throughput), the calibrated
forecast, its prediction interval (where one run of the workload will measure it, at the
forecast's level; ``harness.measure.prediction``), the measurement, whether it fell inside, and the
forecast's error (predicted − measured) / measured; a line counts the measurements inside. Then the
forecast's SLO verdicts (three-valued from its intervals, ``harness.predict.verdicts``) with their
intervals beside the run's, what it was calibrated on (``checked``), the fit's residuals and every
feature it extrapolated. Reads the forecast's JSON only (no torch).
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.report.doc import Bullets, Section, Table, Text
from harness.report.rows import Ctx, fmt
from harness.report.slo_table import verdict_text
from harness.spec.json_file import read_json_file

FORECAST_VERDICTS = (
    "Predicted verdicts (harness/predict/verdicts.py): PASS when the forecast's whole interval "
    "meets the target, FAIL when it misses it, INCONCLUSIVE when it straddles the limit (the "
    'forecast cannot say which side a run lands on); "(point only)": judged on the point '
    "forecast, which had no interval (--draws 0)."
)
BASIS = {
    "interval": " (from its intervals)",
    "point": " (on the point forecast only)",
    "mixed": " (partly on the point forecast only)",
}
PREDICTION_FILE = "prediction.json"
PREDICT_KIND = "harness.predict/1"

# (label, metric key, planner bound key, bound scale to the metric's unit, bound sense)
ROWS = (
    ("TTFT median (ms)", "median_ttft_ms", "ttft_floor_s", 1e3, "≥"),
    ("TTFT p99 (ms)", "p99_ttft_ms", "ttft_floor_s", 1e3, "≥"),
    ("TPOT median (ms)", "median_tpot_ms", "tpot_at_rows_s", 1e3, "≥"),
    ("TPOT p99 (ms)", "p99_tpot_ms", "tpot_at_rows_s", 1e3, "≥"),
    ("ITL median (ms)", "median_itl_ms", None, 1.0, ""),
    ("E2E median (ms)", "median_e2el_ms", "e2e_floor_s", 1e3, "≥"),
    ("throughput (req/s)", "request_throughput", "rps_bound", 1.0, "≤"),
    ("goodput (req/s)", "request_goodput", None, 1.0, ""),
    ("output tokens/s", "output_throughput", None, 1.0, ""),
)


def load_prediction(run_dir: Path, path: str | None) -> dict | None:
    """The forecast given by ``--predicted`` (UsageError if it is not one), else ``prediction.json``
    of the run directory when present, else None."""
    p = Path(path) if path else run_dir / PREDICTION_FILE
    if not path and not p.exists():
        return None
    data = read_json_file(
        p, "--predicted", "write one with `harness predict CONFIG --from RUN --out FILE`"
    )
    if data.get("kind") != PREDICT_KIND or not isinstance(data.get("metrics"), dict):
        raise UsageError(
            f"--predicted: {p} is not a `harness predict` forecast ({PREDICT_KIND}); "
            "write one with `harness predict CONFIG --from RUN --out FILE`"
        )
    return data


def interval_text(iv: dict | None) -> str:
    if not iv:
        return "—"
    lo, hi = iv.get("low"), iv.get("high")
    return f"[{'open' if lo is None else fmt(lo)}, {'open' if hi is None else fmt(hi)}]"


def inside_text(iv: dict | None, measured) -> str:
    from harness.measure.prediction import inside

    return {True: "yes", False: "**no**", None: "—"}[inside(iv, measured)]


def error_pct(predicted, measured) -> str:
    if predicted is None or measured in (None, 0):
        return "—"
    return f"{(predicted - measured) / measured * 100:+.1f} %"


def predicted_section(ctx: Ctx, pred: dict | None) -> Section | None:
    if pred is None:
        return None
    m = ctx.run.summary.get("metrics") or {}
    pm = pred.get("metrics") or {}
    bounds = (ctx.run.summary.get("predicted") or {}).get("bounds") or {}
    ivs = (pred.get("intervals") or {}).get("metrics") or {}
    level = (pred.get("intervals") or {}).get("level")
    rows, counted = [], []
    for label, key, bkey, scale, sense in ROWS:
        b = bounds.get(bkey) if bkey else None
        ins = inside_text(ivs.get(key), m.get(key))
        if ins != "—":
            counted.append(ins == "yes")
        rows.append(
            [
                label,
                f"{sense} {fmt(b * scale)}" if b is not None else "—",
                fmt(pm.get(key)),
                interval_text(ivs.get(key)),
                fmt(m.get(key)),
                ins,
                error_pct(pm.get(key), m.get(key)),
            ]
        )
    measured_slo = {str(r.get("target")): r for r in ctx.run.summary.get("slo") or []}
    slo_rows = [
        [
            str(r.get("target")),
            fmt(r.get("measured")),
            interval_text(r) if r.get("basis") == "interval" else "—",
            verdict_text(r),
            fmt((measured_slo.get(str(r.get("target"))) or {}).get("measured")),
            verdict_text(measured_slo.get(str(r.get("target"))) or {}),
        ]
        for r in pred.get("slo") or []
    ]
    wl = pred.get("workload") or {}
    blocks = [
        Text(
            f"Forecast by harness predict from {pred.get('from')}: {pred.get('checked')}. "
            f"Workload forecast: {wl.get('arrival')}, rate {wl.get('rate_rps')}, concurrency "
            f"{wl.get('concurrency')}, {wl.get('num_requests')} requests; predicted verdict "
            f"{pred.get('verdict')}{BASIS.get(pred.get('verdict_basis'), '')}, measured "
            f"{ctx.run.summary.get('verdict')}."
        ),
        Table(
            [
                "quantity",
                "bound (planner)",
                "predicted (calibrated)",
                f"interval ({level * 100:g} %)" if level else "interval",
                "measured",
                "inside",
                "error",
            ],
            rows,
        ),
        Text(
            f"{sum(counted)} of {len(counted)} measurements inside their {level * 100:g} % "
            f"forecast intervals ({(pred.get('intervals') or {}).get('draws')} draws; "
            f"{(pred.get('intervals') or {}).get('not_included')} is not in them)."
            if counted
            else "The forecast has no intervals (made with --draws 0, or before they existed)."
        ),
    ]
    if slo_rows:
        blocks.append(
            Table(
                [
                    "SLO target",
                    "predicted",
                    "interval",
                    "predicted verdict",
                    "measured",
                    "measured verdict",
                ],
                slo_rows,
            )
        )
        blocks.append(Text(FORECAST_VERDICTS))
    fit = []
    for sc in (pred.get("model") or {}).get("stages") or []:
        r = sc.get("residuals") or {}
        fit.append(
            f"stage {sc.get('stage')} ({sc.get('source')}): n {r.get('n')}, RMSE "
            f"{fmt((r.get('rmse_s') or 0) * 1e3)} ms, mean |residual| / mean "
            f"{fmt(r.get('rel_mae'))}, "
            f"R² {fmt(r.get('r2'))}"
        )
    extra = [
        f"extrapolated: stage {e.get('stage')} {e.get('feature')} {fmt(e['forecast_range'][0])}.."
        f"{fmt(e['forecast_range'][1])} (fitted on "
        f"{fmt(e['fitted_range'][0])}..{fmt(e['fitted_range'][1])}, "
        f"{fmt(e.get('beyond_pct'))} % of the range beyond it)"
        for e in pred.get("extrapolation") or []
    ]
    blocks.append(Bullets(fit + (extra or ["no feature beyond the fitted range"])))
    return Section("Predicted (calibrated) vs measured", blocks)
