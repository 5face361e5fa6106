"""The sweep's report (``DIR/report.md`` and ``DIR/pareto.png``) from ``sweep.json`` alone: the
chart, the ranking (predicted), every run (measured, with intervals), the best layout under the
SLOs and its evidence, each layout's forecast error, and "nodes to modify": the layout to move to
and what it measured, when one beat the spec's own."""

from __future__ import annotations

from pathlib import Path

from harness.report.doc import Image, Section, Table, Text
from harness.results.atomic import atomic_write_text


def _f(v, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _rel(path, doc: dict) -> str:
    root = doc.get("root")
    if path and root and str(path).startswith(str(root).rstrip("/") + "/"):
        return str(path)[len(str(root).rstrip("/")) + 1 :]
    return str(path)


def _iv(v, lo, hi, fmt=".3g") -> str:
    if v is None:
        return "–"
    return f"{format(v, fmt)} [{_f(lo, fmt)}, {_f(hi, fmt)}]"


def advantage_line(doc: dict) -> str:
    adv, best, base = doc.get("advantage"), doc.get("best"), doc.get("baseline")
    if best is None:
        return (
            "No layout met every SLO at any load measured: there is no best layout under the SLOs."
        )
    head = (
        f"Best under the SLOs: {best['layout']} at {doc['field']} = {best['load']:g}: "
        f"{_iv(best['goodput_per_gpu'], best['goodput_low'], best['goodput_high'])} requests/s "
        f"of goodput per GPU, {_f(best['per_gpu'])} output tokens/s per GPU at "
        f"{_f(best['per_user'])} tokens/s per user (verdict {best['verdict']}, "
        f"{best['requests']} requests, `{_rel(best['run_dir'], doc)}`)."
    )
    if adv is None or base is None:
        return head
    ok = "" if base.get("met_slos") else " (it met the SLOs at no load: its run of most goodput)"
    conf = f"{adv['confidence'] * 100:g} %"
    return (
        f"{head}\n\nAgainst the spec's layout {base['layout']} at {base['load']:g}{ok}: goodput "
        f"per GPU {_f(base['goodput_per_gpu'])} → "
        f"{_f(best['goodput_per_gpu'])}, change {_f(adv['pct'], '+.1f')} % "
        f"[{_f(adv['low_pct'], '+.1f')}, {_f(adv['high_pct'], '+.1f')}] ({conf}, {adv['basis']})."
    )


def nodes_to_modify(doc: dict) -> str:
    best, base, adv = doc.get("best"), doc.get("baseline"), doc.get("advantage")
    if best is None:
        return "None proposed: no layout met every SLO."
    if best["layout"] == doc.get("spec_layout"):
        return f"None: the spec's own layout {best['layout']} is the best measured under the SLOs."
    e = next(x for x in doc["layouts"] if x["name"] == best["layout"])
    sure = adv is not None and adv.get("low_pct") is not None and adv["low_pct"] > 0
    what = (
        f"measured {_f(best['goodput_per_gpu'])} requests/s of goodput per GPU at "
        f"{doc['field']} = {best['load']:g}"
        + ("" if base is None else f" against {_f(base['goodput_per_gpu'])} for {base['layout']}")
        + (
            ""
            if adv is None
            else f" ({_f(adv['pct'], '+.1f')} %, interval "
            f"[{_f(adv['low_pct'], '+.1f')}, {_f(adv['high_pct'], '+.1f')}] %)"
        )
    )
    verdict = "better with confidence" if sure else "not shown better with confidence"
    return (
        f"parallel: tp={e['tp']}, pp={e['pp']}, dp={e['dp']} (layout {e['name']}, an even "
        f"layer split), {what}: {verdict}."
    )


def _runs_table(doc: dict) -> Table:
    header = [
        "layout",
        "load",
        "phase",
        "verdict",
        "out tok/s/GPU [interval]",
        "tok/s/user [interval]",
        "goodput/GPU [interval]",
        "predicted out tok/s/GPU",
        "run",
    ]
    rows = []
    for e in doc["layouts"]:
        sim = {q["load"]: q for q in ((e.get("predicted") or {}).get("points") or [])}
        for r in e["runs"]:
            p = r.get("point") or {}
            rows.append(
                [
                    e["name"],
                    f"{r['load']:g}",
                    r["phase"],
                    r["verdict"],
                    _iv(p.get("per_gpu"), p.get("per_gpu_low"), p.get("per_gpu_high")),
                    _iv(p.get("per_user"), p.get("per_user_low"), p.get("per_user_high")),
                    _iv(p.get("goodput_per_gpu"), p.get("goodput_low"), p.get("goodput_high")),
                    _f((sim.get(r["load"]) or {}).get("per_gpu")),
                    _rel(r.get("run_dir"), doc),
                ]
            )
    return Table(header, rows)


ERROR_KEYS = ("output_throughput", "mean_tpot_ms", "median_e2el_ms", "request_goodput")


def _errors_table(doc: dict) -> Table:
    rows = []
    for e in doc["layouts"]:
        fe, pred = e.get("forecast_error"), e.get("predicted") or {}
        if not fe:
            why = pred.get("refused") or "not calibrated"
            rows.append([e["name"], "–", "0", why] + ["–"] * (len(ERROR_KEYS) - 1))
            continue
        m = fe["mean_abs_out_of_sample"]
        factor = _f((pred.get("closure") or {}).get("factor"))
        rows.append(
            [e["name"], factor, str(fe["n_out_of_sample"])] + [_pct(m.get(k)) for k in ERROR_KEYS]
        )
    return Table(["layout", "closure factor", "loads out of sample", *ERROR_KEYS], rows)


def caveat(entry: dict) -> str:
    """Why a layout's forecast should not be trusted, or "" (the closure factor at its bound: the
    stage model misses its own calibration run by more than a scale)."""
    from_pred = entry.get("predicted") or {}
    if from_pred.get("refused"):
        return "no forecast: " + from_pred["refused"]
    factor = (from_pred.get("closure") or {}).get("factor")
    if factor is not None and (factor <= 0.5 or factor >= 2.0):
        return f"closure factor at its bound ({factor:g}): unreliable"
    return ""


def _ranking_table(doc: dict) -> Table:
    by_name = {e["name"]: e for e in doc["layouts"]}
    rows = [
        [
            str(r["rank"]),
            r["layout"],
            _f(r["score"]),
            r["basis"],
            _f(by_name[r["layout"]]["planner"].get("rps_bound")),
            caveat(by_name[r["layout"]]),
            "yes" if r["selected"] else "no",
        ]
        for r in doc.get("ranking") or []
    ]
    header = ["rank", "layout", "score", "basis", "planner RPS bound", "caveat", "ran every load"]
    return Table(header, rows)


def sweep_sections(doc: dict, chart: str | None) -> tuple[str, list, list[Section]]:
    """(title, intro, sections) of the sweep's report."""
    state = "complete" if doc.get("complete") else f"INCOMPLETE: {doc.get('stopped', 'running')}"
    loads = ", ".join(f"{x:g}" for x in doc.get("loads") or [])
    intro = [
        Text(
            f"Spec layout {doc.get('spec_layout')}; loads along {doc.get('field')}: {loads}"
            f"{' (auto: until the knee)' if doc.get('auto_loads') else ''}; SLOs: "
            f"{'; '.join(doc.get('slo_targets') or []) or 'none'}; calibration: "
            f"{doc.get('calibrate')}."
        )
    ]
    best = (
        [Image(chart, "Pareto chart: output tokens/s per GPU against tokens/s per user")]
        if chart
        else []
    )
    sections = [
        Section("Best layout under the SLOs", [*best, Text(advantage_line(doc))]),
        Section("Nodes to modify", [Text(nodes_to_modify(doc))]),
        Section("Ranking (predicted, before the ladder ran)", [_ranking_table(doc)]),
        Section("Runs (measured; intervals at the spec's confidence)", [_runs_table(doc)]),
        Section(
            "Forecast error per layout",
            [
                Text(
                    "Mean |predicted − measured| / measured over the loads other than the "
                    "calibration's (the calibration load is in-sample)."
                ),
                _errors_table(doc),
            ],
        ),
    ]
    return f"Sweep: {doc.get('name')} ({state})", intro, sections


def write_sweep_report(root: Path, doc: dict) -> Path:
    """``report.md`` and the self-contained ``report.html`` (with ``pareto.png``) in ``root``."""
    from harness.report.doc import to_html, to_markdown
    from harness.report.plots_sweep import plot_pareto

    root = Path(root)
    chart = plot_pareto(doc, root / "pareto.png")
    title, intro, sections = sweep_sections(doc, chart.name)
    atomic_write_text(root / "report.html", to_html(title, intro, sections, root))
    return atomic_write_text(root / "report.md", to_markdown(title, intro, sections))


def print_summary(doc: dict) -> str:
    lines = [
        f"{'layout':<14} {'load':>8} {'verdict':<13} {'out tok/s/GPU':>14} {'goodput/GPU':>12}"
    ]
    for e in doc.get("layouts") or []:
        for r in e.get("runs") or []:
            p = r.get("point") or {}
            lines.append(
                f"{e['name']:<14} {r['load']:>8g} {r['verdict']:<13} {_f(p.get('per_gpu')):>14} "
                f"{_f(p.get('goodput_per_gpu')):>12}"
            )
    lines.append(advantage_line(doc).replace("**", ""))
    return "\n".join(lines)
