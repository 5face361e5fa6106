"""``harness import-bench FILE RUN_DIR``: a ``vllm bench serve --save-result --save-detailed``
result → a run directory that ``report``, ``compare``, ``history`` and ``verify-claims --results``
read like any run.

The requests table comes from the file's per-request lists (harness.results.bench_import), the
spec's workload from its header (rate, burstiness, concurrency, prompts, lengths), the model,
cluster, layout, SLO targets and the plan from ``--config`` when given (else the model id the file
names, when it is a folder with config.json here, and the layout of its ``--metadata tp=.. pp=..``,
else 1×1×1; no plan, the hardware being unknown). A model that cannot be resolved here makes a
metrics-only run: no plan, ``summary.no_plan: model unknown``, which the report and compare show
("no plan: model unknown"). ``summary.engine`` says what ran:
``kind: openai`` and what the file says. The summary's metrics are recomputed by
``harness.measure.metrics.summarize`` from the records, from the send and over the file's own
duration (vLLM's definitions), and the command says whether they reproduce the file's numbers.
Only the requests table exists: the others are absent (the report says so).
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
        "file", help="the JSON file vllm bench serve --save-result --save-detailed wrote"
    )
    p.add_argument("run_dir", help="the run directory to create (must not hold a run)")
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
    p.add_argument("--name", help="the run's name (default: the file's label, else vllm-bench)")


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
    from harness.results.bench_import import (
        file_metrics,
        read_bench_file,
        records_from_bench,
        selected_stats,
        unreproduced,
        workload_from_bench,
    )
    from harness.results.summary import new_summary, overall_verdict, slo_rows, utc_now
    from harness.results.writer import RunWriter
    from harness.spec.bench_flags import parse_goodput

    run_dir = Path(args.run_dir)
    if (run_dir / "summary.json").exists():
        raise UsageError(
            f"RUN_DIR: {run_dir} already holds a run (summary.json); give a new folder"
        )
    goodput = parse_goodput(args.goodput, "--goodput") if args.goodput else None
    data = read_bench_file(args.file)
    records, errors = records_from_bench(data)
    spec, hardware, layout, targets, predicted = _deployment(args, data)
    no_plan = _no_plan(args, data)
    name = args.name or str(data.get("label") or "vllm-bench")
    spec["name"] = name
    spec["workload"] = workload_from_bench(data)
    if goodput:
        spec.setdefault("slo", {})["goodput"] = goodput
    metrics = summarize(
        records,
        duration_s=float(data["duration"]),
        slo_thresholds_ms=goodput,
        latency_origin="send",
    )
    confidence = float((spec.get("slo") or {}).get("confidence") or DEFAULT_CONFIDENCE)
    samples = samples_of(records, goodput, "send", float(data["duration"]))
    verdicts = judge_slo(targets, metrics, samples, confidence)
    missed = unreproduced(data, metrics)
    pct_metrics, pct = selected_stats(data)
    notes = [
        f"imported from {args.file} (vllm bench serve): TTFT and E2EL from the send, over the "
        f"file's "
        "duration, as vLLM defines them; only the requests table exists"
    ]
    if data.get("request_goodput") is not None and not goodput:
        notes.append(
            f"the file's request_goodput {data['request_goodput']:.4g} req/s needs its --goodput "
            "thresholds, which the file does not record: give --goodput to recompute it"
        )
    if no_plan:
        notes.append(f"no plan: {no_plan}")
    engine = {
        "kind": ENGINE_KIND,
        "source": "vllm bench serve",
        "file": str(args.file),
        **{
            k: data.get(k)
            for k in (
                "backend",
                "endpoint_type",
                "model_id",
                "tokenizer_id",
                "label",
                "date",
                "request_rate",
                "burstiness",
                "max_concurrency",
                "num_prompts",
            )
        },
        "duration_s": float(data["duration"]),
        "latency_origin": "send",
        "percentile_metrics": pct_metrics,
        "metric_percentiles": pct,
        "goodput_ms": goodput,
        "file_metrics": file_metrics(data),
        "unreproduced": missed,
    }
    summary = new_summary(
        name, hardware, layout, predicted, started_utc=_started_utc(data.get("date"))
    )
    summary.update(
        {
            "complete": True,
            "incomplete_reason": None,
            "harness_version": __version__,
            "finished_utc": utc_now(),
            "wall_s": float(data["duration"]),
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
        "benchmark_date": data.get("date"),
    }
    rows = []
    for r in records:
        row = r.to_dict()
        row["error"] = errors.get(r.request_id)
        rows.append(row)
    writer = RunWriter(run_dir)
    writer.start(spec, env, summary)
    writer.write_final(summary, {"requests": rows})
    done = metrics["completed"]
    if missed:
        print(
            f"harness import-bench: {len(records)} requests ({done} completed) → {run_dir}; the "
            f"summary does "
            f"NOT reproduce the file's {', '.join(missed)}",
            file=sys.stderr,
        )
    else:
        print(
            f"harness import-bench: {len(records)} requests ({done} completed) → {run_dir}; the "
            f"summary "
            "reproduces every number of the file" + (f"; no plan: {no_plan}" if no_plan else ""),
            file=sys.stderr,
        )
    return 0
