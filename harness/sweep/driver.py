"""The sweep: rank first, run second.

1. Every candidate layout is predicted by the planner (``candidates.planner_row``).
2. ``calibrate == "per-layout"``: each candidate's first load is run (its calibration run, a real
   run directory like every other), the simulator is calibrated on it and forecasts the whole
   ladder (``predicted``); ``"none"``: nothing runs before the ranking.
3. The candidates are ranked (``predicted.score``); the top K and the spec's own layout run the
   ladder (``ladder.Ladder.next_load``: every listed load, or ``auto`` until the knee).
4. The result: every measured point, the Pareto front, the best layout under the SLOs with its
   advantage over the spec's layout, and the forecast error per layout (``finish``).

The driver starts nothing itself: ``runner.layout(key)`` is a context manager around one layout's
runs (one vLLM server for all of them; one world per run for the reference engine) that yields
``run(load) -> ProbeResult`` (``harness.verdicts.capacity``: verdict, metrics, failed, and the run
directory, exit code and whether a finished run was reused). A failed run ends the sweep
(``stopped``; ``sweep.json`` stays ``complete: false``), as a failed probe ends a capacity search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.results.writer import read_summary_file
from harness.sweep import pareto
from harness.sweep.candidates import Candidates, LayoutKey, planner_row
from harness.sweep.ladder import Ladder, LoadPoint, knee
from harness.sweep.predicted import calibrate_layout, forecast_errors, score, simulate_ladder
from harness.sweep.state import KIND


class SweepStopped(Exception):
    """A run failed: the sweep ends with what it has."""


@dataclass(frozen=True)
class Plan:
    cands: Candidates
    ladder: Ladder
    top: int
    calibrate: str  # per-layout | none
    confidence: float


def new_doc(plan: Plan, args: dict, spec) -> dict:
    lad = plan.ladder
    tpot = [t.value for t in spec.slo_targets if t.metric == "tpot" and t.op == "<="]
    return {
        "kind": KIND,
        "name": spec.name,
        "slo_targets": [t.text for t in spec.slo_targets],
        "tpot_limit_ms": min(tpot) if tpot else None,
        "complete": False,
        "args": args,
        "field": lad.field,
        "loads": list(lad.loads),
        "auto_loads": lad.auto,
        "spec_layout": plan.cands.spec_key.name,
        "calibrate": plan.calibrate,
        "layouts": [
            {
                "name": k.name,
                "tp": k.tp,
                "pp": k.pp,
                "dp": k.dp,
                "gpus": k.gpus,
                "is_spec_layout": k == plan.cands.spec_key,
                "planner": planner_row(plan.cands.planned[k]),
                "runs": [],
                "predicted": None,
                "selected": None,
            }
            for k in plan.cands.keys
        ],
        "ranking": None,
        "best": None,
    }


def _entry(doc: dict, key: LayoutKey) -> dict:
    return next(e for e in doc["layouts"] if e["name"] == key.name)


def _points(entry: dict) -> list[LoadPoint]:
    return [
        LoadPoint(
            r["load"], r["metrics"].get("request_throughput"), r["metrics"].get("median_e2el_ms")
        )
        for r in entry["runs"]
        if not r["failed"]
    ]


def _run_row(load: float, result, phase: str) -> dict:
    keys = ("request_throughput", "output_throughput", "request_goodput", "mean_tpot_ms")
    keys += ("median_e2el_ms", "median_ttft_ms", "completed")
    return {
        "load": load,
        "phase": phase,
        "verdict": "INCOMPLETE" if result.failed else result.verdict,
        "failed": result.failed,
        **({"reason": result.reason} if result.failed else {}),
        "metrics": {k: result.metrics.get(k) for k in keys},
        **result.extra,
    }


def sweep(plan: Plan, doc: dict, runner, load_spec: Callable, save: Callable[[dict], None]) -> dict:
    """Drive the sweep into ``doc`` (saved after every run); raises ``SweepStopped`` when a run
    fails (``doc`` then says which)."""
    lad, keys = plan.ladder, plan.cands.keys

    def run_loads(key: LayoutKey, phase: str, only_first: bool) -> None:
        entry = _entry(doc, key)
        with runner.layout(key) as run:
            while (x := lad.next_load(_points(entry))) is not None:
                result = run(x)
                entry["runs"].append(_run_row(x, result, phase))
                save(doc)
                if result.failed:
                    doc["stopped"] = f"{key.name} at {lad.field}={lad.value(x)}: {result.reason}"
                    save(doc)
                    raise SweepStopped(doc["stopped"])
                if only_first:
                    return

    if plan.calibrate == "per-layout":
        for key in keys:
            if not _entry(doc, key)["runs"]:
                run_loads(key, "calibration", only_first=True)
            _predict(plan, doc, key, load_spec)
            save(doc)
    ranked = sorted(keys, key=lambda k: _rank_key(plan, doc, k), reverse=True)
    chosen = list(ranked[: plan.top])
    if plan.cands.spec_key not in chosen:
        chosen.append(plan.cands.spec_key)
    doc["ranking"] = [
        {
            "layout": k.name,
            "rank": i + 1,
            "score": _rank_key(plan, doc, k)[0],
            "basis": _rank_key(plan, doc, k)[2],
            "selected": k in chosen,
        }
        for i, k in enumerate(ranked)
    ]
    for k in keys:
        _entry(doc, k)["selected"] = k in chosen
    save(doc)
    for key in chosen:
        run_loads(key, "ladder", only_first=False)
        if plan.calibrate == "per-layout":
            _predict(plan, doc, key, load_spec)  # the loads auto reached
        save(doc)
    return finish(plan, doc)


def _rank_key(plan: Plan, doc: dict, key: LayoutKey) -> tuple[float, float, str]:
    entry = _entry(doc, key)
    sim = (entry.get("predicted") or {}).get("points")
    return score(sim, entry["planner"], key.gpus)


def _predict(plan: Plan, doc: dict, key: LayoutKey, load_spec: Callable) -> None:
    """Calibrate the simulator on the layout's first run and forecast every ladder load (and each
    load it ran beyond)."""
    entry = _entry(doc, key)
    runs = [r for r in entry["runs"] if not r["failed"]]
    if not runs:
        return
    first = min(runs, key=lambda r: r["load"])
    spec = load_spec(key, first["load"])
    model, why = calibrate_layout(first["run_dir"], spec)
    if model is None:
        entry["predicted"] = {"calibrated_on": first["run_dir"], "refused": why, "points": None}
        return
    loads = sorted(set(plan.ladder.loads) | {r["load"] for r in runs})
    points = simulate_ladder(model, lambda x: load_spec(key, x), loads, key.gpus)
    entry["predicted"] = {
        "calibrated_on": first["run_dir"],
        "calibration_load": first["load"],
        "closure": dict(model.closure),
        "points": points,
    }


def finish(plan: Plan, doc: dict) -> dict:
    """Points, front, best, advantage and forecast errors into ``doc``; ``complete: true``."""
    points = []
    for entry in doc["layouts"]:
        for r in entry["runs"]:
            summary = None if r["failed"] else read_summary_file(Path(r["run_dir"]))
            if summary is not None:
                p = pareto.point_of(summary, entry["name"], r["load"], entry["gpus"], r["run_dir"])
                r["point"] = p.to_dict()
                points.append(p)
        measured = {r["load"]: r["metrics"] for r in entry["runs"] if not r["failed"]}
        pred = entry.get("predicted") or {}
        if pred.get("points"):
            entry["forecast_error"] = forecast_errors(
                pred["points"], measured, pred.get("calibration_load")
            )
        entry["knee"] = knee(_points(entry))
    doc["pareto_front"] = [
        {"layout": p.layout, "load": p.load} for p in pareto.pareto_front(points)
    ]
    best = pareto.best_under_slo(points)
    base, base_ok = pareto.baseline(points, plan.cands.spec_key.name)
    doc["best"] = None if best is None else best.to_dict()
    doc["baseline"] = None if base is None else {**base.to_dict(), "met_slos": base_ok}
    doc["advantage"] = (
        None if best is None or base is None else pareto.advantage(best, base, plan.confidence)
    )
    doc["complete"] = True
    doc.pop("stopped", None)
    return doc
