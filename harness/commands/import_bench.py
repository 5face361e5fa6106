"""``harness import-bench PATH RUN_DIR``: a peer tool's result → a run directory that ``report``,
``compare``, ``history`` and ``verify-claims --results`` read like any run.

The format is detected from the files (``harness.results.imports.FORMATS``, one entry per format):
``vllm bench serve --save-result --save-detailed`` JSON, AIPerf's ``profile_export.jsonl`` (or its
artifact folder), guidellm's ``benchmarks.json``, MLPerf LoadGen's ``mlperf_log_detail.txt`` (with
its trace and accuracy log where present). The reader gives our request records; the summary's
metrics are recomputed from them by ``harness.measure.metrics.summarize`` (TTFT/E2E from the
tool's own origin: the client's send, or LoadGen's schedule; rates over the tool's duration), and
the command says whether they reproduce the tool's own numbers wherever the definitions agree.
Where they differ, ``summary.engine.comparisons`` keeps both values with the tool's definition, and
the report's "Imported results" section shows them. The spec's workload comes from the file; the
model, cluster, layout, SLO targets and the plan from ``--config`` when given (else the model id
the file names, when it is a folder with config.json here, and the layout of vLLM's ``--metadata
tp=.. pp=..``, else 1×1×1; no plan, the hardware being unknown). A model that cannot be resolved
here makes a metrics-only run: no plan, ``summary.no_plan: model unknown``, which the report and
compare show. Only the requests table exists: the others are absent (the report says so).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from harness import __version__
from harness.errors import UsageError

ENGINE_KIND = "openai"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="PATH",
        help="a peer tool's result: vllm bench serve's --save-result JSON, AIPerf's "
        "profile_export.jsonl or its artifact folder, guidellm's benchmarks.json, LoadGen's "
        "mlperf_log_detail.txt or its folder",
    )
    p.add_argument(
        "run_dir", metavar="RUN", help="the run directory to create (must not hold a run)"
    )
    p.add_argument(
        "--config",
        help="spec YAML of the deployment that was benchmarked (model, cluster, "
        "layout, SLO targets); its workload is replaced by the file's",
    )
    p.add_argument(
        "--goodput",
        nargs="+",
        metavar="KEY:MS",
        default=None,
        help="the --goodput thresholds the benchmark used (e.g. ttft:500 tpot:100); the file "
        "does not record them, and request_goodput needs them",
    )
    p.add_argument("--name", help="the run's name (default: the file's label, else the tool's)")


def _started_utc(date: object) -> str | None:
    try:
        return _dt.datetime.strptime(str(date), "%Y%m%d-%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _deployment(args: argparse.Namespace, data: dict) -> tuple[dict, dict, dict, list, dict]:
    """(spec dict, hardware, layout, SLO targets, predicted) from --config, else from the file."""
    from harness.results.bench_import import layout_from_bench
    from harness.results.summary import summary_header

    if args.config:
        from harness.plan.planner import plan as make_plan
        from harness.spec.spec import load_spec

        spec = load_spec(args.config)
        header = summary_header(spec)
        header["hardware"]["backend"] = None  # the server's own collectives are not in the file
        return (
            spec.to_dict(),
            header["hardware"],
            header["layout"],
            spec.slo_targets,
            make_plan(spec).to_dict(),
        )
    from harness.spec.hf_config import model_from_hf_config
    from harness.spec.layout import even_split

    model_id = str(data.get("model_id") or "")
    lay = layout_from_bench(data) or {"tp": 1, "pp": 1, "dp": 1}
    if _no_plan(args, data) == MODEL_UNKNOWN:  # metrics only: no layers, no plan
        world = lay["tp"] * lay["pp"] * lay["dp"]
        spec = {
            "model": {"served_as": model_id or None},
            "cluster": {"gpu": "unknown", "nodes": 1, "gpus_per_node": world},
            "parallel": dict(lay),
            "slo": {"targets": []},
        }
        hardware = {"gpu": "unknown", "gpu_name": "unknown", "total_gpus": world, "nodes": None}
        return spec, {**hardware, "backend": None}, {**lay, "layer_split": []}, [], {}
    shape = model_from_hf_config(model_id)
    if lay["pp"] > shape.num_layers:
        raise UsageError(
            f"import-bench: metadata pp={lay['pp']} exceeds the model's {shape.num_layers} layers"
        )
    world = lay["tp"] * lay["pp"] * lay["dp"]
    spec = {
        "model": {"config": model_id},
        "cluster": {"gpu": "unknown", "nodes": 1, "gpus_per_node": world},
        "parallel": dict(lay),
        "slo": {"targets": []},
    }
    hardware = {
        "gpu": "unknown",
        "gpu_name": "unknown",
        "total_gpus": world,
        "nodes": None,
        "backend": None,
    }
    return (
        spec,
        hardware,
        {**lay, "layer_split": list(even_split(shape.num_layers, lay["pp"]))},
        [],
        {},
    )


MODEL_UNKNOWN = "model unknown"


def _no_plan(args: argparse.Namespace, data: dict) -> str | None:
    """Why the run has no plan: the file's model cannot be resolved here, or (without --config) the
    hardware is unknown; None with --config."""
    if args.config:
        return None
    model_id = str(data.get("model_id") or "")
    if model_id and ((Path(model_id) / "config.json").is_file() or model_id.endswith(".json")):
        return "hardware unknown (give --config)"
    return MODEL_UNKNOWN


def main(args: argparse.Namespace) -> int:
    from harness.measure.metric_intervals import DEFAULT_CONFIDENCE, metric_intervals, samples_of
    from harness.measure.metrics import summarize
    from harness.measure.slo_verdicts import judge_slo
    from harness.results.imports import read_any
    from harness.results.imports.base import unreproduced
    from harness.results.summary import new_summary, overall_verdict, slo_rows, utc_now
    from harness.results.writer import RunWriter
    from harness.spec.bench_flags import parse_goodput

    run_dir = Path(args.run_dir)
    if (run_dir / "summary.json").exists():
        raise UsageError(
            f"RUN_DIR: {run_dir} already holds a run (summary.json); give a new folder"
        )
    goodput = parse_goodput(args.goodput, "--goodput") if args.goodput else None
    fmt, imp = read_any(args.file)
    spec, hardware, layout, targets, predicted = _deployment(args, imp.header)
    no_plan = _no_plan(args, imp.header)
    name = args.name or imp.name or fmt.name
    spec["name"] = name
    spec["workload"] = imp.workload
    if goodput:
        spec.setdefault("slo", {})["goodput"] = goodput
    metrics = summarize(
        imp.records,
        duration_s=imp.duration_s,
        slo_thresholds_ms=goodput,
        latency_origin=imp.latency_origin,
    )
    confidence = float((spec.get("slo") or {}).get("confidence") or DEFAULT_CONFIDENCE)
    samples = samples_of(imp.records, goodput, imp.latency_origin, imp.duration_s)
    verdicts = judge_slo(targets, metrics, samples, confidence)
    rows = imp.comparison_rows(metrics)
    missed = unreproduced(rows)
    origin = "the send" if imp.latency_origin == "send" else "the scheduled arrival"
    notes = [
        f"imported from {args.file} ({fmt.tool}): TTFT and E2EL from {origin}, as the tool "
        "defines them; only the requests table exists",
        *imp.notes,
    ]
    if no_plan:
        notes.append(f"no plan: {no_plan}")
    if imp.goodput_in_file is not None and not goodput:
        notes.append(
            f"the file's request_goodput {imp.goodput_in_file:.4g} req/s needs its --goodput "
            "thresholds, which the file does not record: give --goodput to recompute it"
        )
    differ = [r for r in rows if not r["same"]]
    engine = {
        "kind": ENGINE_KIND,
        "source": fmt.tool,
        "format": fmt.name,
        "file": str(args.file),
        "files": imp.files,
        **imp.header,
        "duration_s": imp.duration_s,
        "latency_origin": imp.latency_origin,
        "goodput_ms": goodput,
        "comparisons": rows,
        "definitions_differ": len(differ),
        "token_counts": imp.token_counts,
        "unreproduced": missed,
    }
    summary = new_summary(
        name, hardware, layout, predicted, started_utc=_started_utc(imp.header.get("date"))
    )
    wall = imp.duration_s if imp.duration_s is not None else metrics["duration_s"]
    summary.update(
        {
            "complete": True,
            "incomplete_reason": None,
            "harness_version": __version__,
            "finished_utc": utc_now(),
            "wall_s": wall,
            "metrics": metrics,
            "intervals": metric_intervals(samples, confidence),
            "slo": slo_rows(verdicts),
            "verdict": overall_verdict(slo_rows(verdicts), True),
            "measured": {"throughput_rps": metrics["request_throughput"]},
            "engine": engine,
            "notes": notes,
            **({"no_plan": no_plan} if no_plan else {}),
        }
    )
    env = {
        "harness_version": __version__,
        "imported_from": str(args.file),
        "backend": None,
        "benchmark_date": imp.header.get("date"),
    }
    table = []
    for r in imp.records:
        row = r.to_dict()
        row["error"] = imp.errors.get(r.request_id)
        table.append(row)
    writer = RunWriter(run_dir)
    writer.start(spec, env, summary)
    writer.write_final(summary, {"requests": table})
    done = metrics["completed"]
    head = f"harness import-bench: {fmt.tool}, {len(imp.records)} requests ({done} completed) → "
    tail = f"; no plan: {no_plan}" if no_plan else ""
    if missed:
        print(
            f"{head}{run_dir}; the summary does NOT reproduce the tool's {', '.join(missed)}",
            file=sys.stderr,
        )
    elif not imp.records:
        print(
            f"{head}{run_dir}; no per-request records, so none of the tool's {len(rows)} numbers "
            "could be checked (kept in summary.engine.comparisons)",
            file=sys.stderr,
        )
    else:
        checked = sum(1 for r in rows if r["reproduced"])
        print(
            f"{head}{run_dir}; the summary reproduces the tool's numbers ({checked} checked; "
            f"{len(differ)} defined differently, both kept in summary.engine.comparisons){tail}",
            file=sys.stderr,
        )
    return 0
