"""``harness import-bench FILE RUN_DIR``: a benchmark tool's result file → a run directory that
``report``, ``compare``, ``history`` and ``verify-claims --results`` read like any run.

The file's format is one entry of ``harness.results.import_formats.FORMATS`` (today ``vllm bench
serve --save-result --save-detailed``), found by sniffing the file or named with ``--format``; its
reader gives the requests table, the workload and what the file says about the server. The model,
cluster, layout, SLO targets and the plan come from ``--config`` when given. Without it the model is
the one the file names when it is a folder with config.json here (the layout from the file's
metadata, else 1×1×1; no plan: the hardware is unknown), and when it is not, the run is metrics
only: no plan ("no plan: model unknown" in the summary, the report and compare). ``summary.engine``
says what ran: ``kind: openai`` and what the file says. The summary's metrics are recomputed by
``harness.measure.metrics.summarize`` from the records, over the file's own duration and from the
send (the tools' definitions), and the command says whether they reproduce the file's numbers.
Only the requests table exists: the others are absent (the report says so).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from harness.errors import UsageError

ENGINE_KIND = "openai"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from harness.results.import_formats import FORMATS

    p.add_argument(
        "file", help="the result file (vllm bench serve --save-result --save-detailed's JSON)"
    )
    p.add_argument("run_dir", help="the run directory to create (must not hold a run)")
    p.add_argument(
        "--config",
        help="spec YAML of the deployment that was benchmarked (model, cluster, "
        "layout, SLO targets; it adds the plan); its workload is replaced by the file's",
    )
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        default=None,
        help="the file's format (default: found from the file)",
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


@dataclass
class Deployment:
    """What ran, as far as the inputs say: the spec dict (spec.yaml), the summary's hardware and
    layout, the SLO targets, the plan (empty without one) and why there is none."""

    spec: dict
    hardware: dict
    layout: dict
    targets: list = field(default_factory=list)
    predicted: dict = field(default_factory=dict)
    no_plan: str | None = None


def _deployment(config: str | None, result) -> Deployment:
    from harness.results.summary import summary_header

    if config:
        from harness.plan.planner import plan as make_plan
        from harness.spec.spec import load_spec

        spec = load_spec(config)
        header = summary_header(spec)
        header["hardware"]["backend"] = None  # the server's own collectives are not in the file
        return Deployment(
            spec.to_dict(),
            header["hardware"],
            header["layout"],
            spec.slo_targets,
            make_plan(spec).to_dict(),
        )
    model_id = result.model_id or ""
    lay = result.layout or {"tp": 1, "pp": 1, "dp": 1}
    world = lay["tp"] * lay["pp"] * lay["dp"]
    hardware = {
        "gpu": "unknown",
        "gpu_name": "unknown",
        "total_gpus": world,
        "nodes": None,
        "backend": None,
    }
    cluster = {"gpu": "unknown", "nodes": 1, "gpus_per_node": world}
    if not (
        model_id and ((Path(model_id) / "config.json").is_file() or model_id.endswith(".json"))
    ):
        spec = {"model": {"served_as": model_id or None}, "cluster": cluster, "parallel": dict(lay)}
        return Deployment(spec, hardware, {**lay, "layer_split": []}, no_plan="model unknown")
    from harness.spec.hf_config import model_from_hf_config
    from harness.spec.layout import even_split

    shape = model_from_hf_config(model_id)
    if lay["pp"] > shape.num_layers:
        raise UsageError(
            f"import-bench: metadata pp={lay['pp']} exceeds the model's {shape.num_layers} layers"
        )
    spec = {"model": {"config": model_id}, "cluster": cluster, "parallel": dict(lay)}
    layout = {**lay, "layer_split": list(even_split(shape.num_layers, lay["pp"]))}
    return Deployment(spec, hardware, layout, no_plan="hardware unknown (give --config)")


def main(args: argparse.Namespace) -> int:
    from harness.measure.metrics import summarize
    from harness.results.import_formats import result_format, unreproduced
    from harness.results.summary import new_summary, overall_verdict, slo_rows, utc_now
    from harness.results.writer import RunWriter
    from harness.spec.bench_flags import parse_goodput
    from harness.spec.slo import judge

    run_dir = Path(args.run_dir)
    if (run_dir / "summary.json").exists():
        raise UsageError(
            f"RUN_DIR: {run_dir} already holds a run (summary.json); give a new folder"
        )
    goodput = parse_goodput(args.goodput, "--goodput") if args.goodput else None
    fmt = result_format(Path(args.file), args.format)
    result = fmt.read(Path(args.file))
    dep = _deployment(args.config, result)
    name = args.name or result.name or "vllm-bench"
    spec = {**dep.spec, "name": name, "workload": result.workload}
    spec.setdefault("slo", {"targets": []})
    if goodput:
        spec["slo"] = {**spec["slo"], "goodput": goodput}
    metrics = summarize(
        result.records,
        duration_s=result.duration_s,
        slo_thresholds_ms=goodput,
        latency_origin=result.latency_origin,
    )
    verdicts = judge(dep.targets, metrics)
    missed = unreproduced(result.file_metrics, metrics)
    notes = [
        f"imported from {args.file} ({result.tool}): TTFT and E2EL from the "
        f"{result.latency_origin}, over the file's duration, as the tool defines them; only the "
        "requests table exists",
        *result.notes,
    ]
    if result.file_metrics.get("request_goodput") is not None and not goodput:
        notes.append(
            f"the file's request_goodput {result.file_metrics['request_goodput']:.4g} req/s needs "
            "its --goodput thresholds, which the file does not record: give --goodput to "
            "recompute it"
        )
    if dep.no_plan:
        notes.append(f"no plan: {dep.no_plan}")
    engine = {
        "kind": ENGINE_KIND,
        "source": result.tool,
        "file": str(args.file),
        **result.engine,
        "duration_s": result.duration_s,
        "latency_origin": result.latency_origin,
        "goodput_ms": goodput,
        "file_metrics": result.file_metrics,
        "unreproduced": missed,
    }
    summary = new_summary(
        name, dep.hardware, dep.layout, dep.predicted, started_utc=result.started_utc
    )
    summary.update(
        {
            "complete": True,
            "incomplete_reason": None,
            "harness_version": __version__,
            "finished_utc": utc_now(),
            "wall_s": result.duration_s,
            "metrics": metrics,
            "slo": slo_rows(verdicts),
            "verdict": overall_verdict(slo_rows(verdicts), True),
            "measured": {"throughput_rps": metrics["request_throughput"]},
            "engine": engine,
            "notes": notes,
            **({"no_plan": dep.no_plan} if dep.no_plan else {}),
        }
    )
    env = {
        "harness_version": __version__,
        "imported_from": str(args.file),
        "backend": None,
        "benchmark_date": result.engine.get("date"),
    }
    rows = []
    for r in result.records:
        row = r.to_dict()
        row["error"] = result.errors.get(r.request_id)
        rows.append(row)
    writer = RunWriter(run_dir)
    writer.start(spec, env, summary)
    writer.write_final(summary, {"requests": rows})
    done = metrics["completed"]
    told = (
        f"the summary does NOT reproduce the file's {', '.join(missed)}"
        if missed
        else "the summary reproduces every number of the file"
    )
    plan = f"; no plan: {dep.no_plan}" if dep.no_plan else ""
    print(
        f"harness import-bench: {len(result.records)} requests ({done} completed) → {run_dir}; "
        f"{told}{plan}",
        file=sys.stderr,
    )
    return 0
