"""``harness report RUN_DIR``: report.md, report.html, plots/*.png, dag.json and dag.dot in the run
dir.

Rendering never measures: it reads the run directory (``harness.results.reader.load_run``), derives
(``analysis``), draws (``plots``), builds the DAG and the nodes to modify, and writes files.
With ``claims``, each claim of a strategy report is verified against this run through
``harness.verdicts.claims.verify`` and shown beside the predicted and measured values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.report import analysis as an
from harness.report import plots
from harness.report.dag import dag_from_run
from harness.report.dag_io import write_dag
from harness.report.doc import to_html, to_markdown
from harness.report.modify import evidence_from_run, recommend
from harness.report.sections import Ctx, build_sections, intro, predicted_claims
from harness.report.sections_predicted import load_prediction, predicted_section
from harness.results.atomic import atomic_write_text
from harness.results.reader import Run, load_run
from harness.spec.slo import parse_target

PLOTS_DIR = "plots"
PLOT_FILES = {
    "latency": "latency_cdf.png",
    "throughput": "throughput.png",
    "memory": "memory.png",
    "utilization": "utilization.png",
    "comm": "comm.png",
    "nvlink": "nvlink.png",
    "pipeline": "pipeline.png",
}


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    plots: list[Path]
    dag_json: Path | None  # None: no graph (the model's layers are unknown)
    dag_dot: Path | None


def _slo_lines(summary: dict) -> dict[str, list[tuple[str, float]]]:
    """SLO latency targets per plotted metric (ttft, tpot, e2e) in ms."""
    out: dict[str, list[tuple[str, float]]] = {}
    for r in summary.get("slo") or []:
        try:
            t = parse_target(str(r.get("target")))
        except UsageError:
            continue
        if t.is_latency and t.metric in ("ttft", "tpot", "e2e"):
            out.setdefault(t.metric, []).append((t.text, t.value))
    return out


def draw_plots(run: Run, out_dir: Path) -> dict[str, Path]:
    d = out_dir / PLOTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    p = {k: d / v for k, v in PLOT_FILES.items()}
    lay = run.layout()
    hw = run.summary.get("hardware") or {}
    capacity = ((run.summary.get("predicted") or {}).get("gpu") or {}).get("memory_bytes")
    cpu = hw.get("gpu") == "cpu" or hw.get("backend") == "gloo"
    nv = an.nvml_series(run.nvml)
    plots.plot_latency_cdfs(an.latencies_ms(run.requests), _slo_lines(run.summary), p["latency"])
    plots.plot_throughput(an.throughput_series(run.requests), p["throughput"])
    plots.plot_memory(
        run.memory.to_dict("records") if len(run.memory) else [],
        None if cpu else capacity,
        "CPU twin: peak = process RSS" if cpu else "GPU",
        p["memory"],
    )
    plots.plot_utilization(nv, p["utilization"])
    plots.plot_comm(an.comm_by(run.comm), p["comm"])
    plots.plot_nvlink(nv, p["nvlink"])
    plots.plot_pipeline(an.timeline(run.stages), lay.pp, p["pipeline"])
    return p


def verify_claims(claims_path: str, run: Run) -> tuple[list[dict], list[str]]:
    """Claim verdicts (``harness.verdicts.claims``: parse the report, verify against the plan and
    this run) as dicts {id, index, text, claimed, expected, verdict, reason, source, ...}, and its
    notes."""
    try:
        from harness.verdicts.claims import load_claims, verify
    except ImportError:
        raise UsageError(
            "--claims: claim verification (harness.verdicts.claims) is not available in this "
            "build; "
            "run the report without --claims"
        ) from None
    if not Path(claims_path).is_file():
        raise UsageError(
            f"--claims: {claims_path} not found; give the strategy report (markdown) or claims YAML"
        )
    report = verify(load_claims(claims_path), config=None, results=str(run.path))
    return [asdict(v) for v in report.claims], list(report.notes)


def write_report(
    run_dir: str | Path,
    claims: str | None = None,
    out_dir: str | Path | None = None,
    predicted: str | None = None,
) -> ReportFiles:
    """Render the report of ``run_dir`` into ``out_dir`` (default: the run directory itself); with a
    ``harness predict`` forecast (``predicted``, else the run's prediction.json) beside the
    measurement."""
    run = load_run(run_dir)
    forecast = load_prediction(run.path, predicted)
    out = Path(out_dir) if out_dir else run.path
    out.mkdir(parents=True, exist_ok=True)
    claim_rows, claim_notes = verify_claims(claims, run) if claims else (None, [])
    plot_paths = draw_plots(run, out)
    # no layer split: the model is unknown (an import without its model), so no graph to draw
    dag = dag_from_run(run) if run.layout().layer_split else None
    dag_json, dag_dot = write_dag(dag, out) if dag is not None else (None, None)
    ctx = Ctx(
        run=run,
        plots={k: f"{PLOTS_DIR}/{v}" for k, v in PLOT_FILES.items()},
        dag=dag,
        dag_files=[dag_json.name, dag_dot.name] if dag is not None else [],
        advice=recommend(evidence_from_run(run)),
        claims=claim_rows,
        claims_source=claims,
        claim_notes=claim_notes,
        predicted=predicted_claims(run.summary.get("predicted") or {}, run.layout()),
    )
    sections = build_sections(ctx)
    pred_section = predicted_section(ctx, forecast)
    if pred_section is not None:  # right after "Performance vs SLOs"
        at = next(
            (i + 1 for i, sec in enumerate(sections) if sec.title == "Performance vs SLOs"),
            len(sections),
        )
        sections.insert(at, pred_section)
    title = f"Run report: {run.summary.get('name') or run.path.name}"
    head = intro(ctx)
    md = atomic_write_text(out / "report.md", to_markdown(title, head, sections))
    html_path = atomic_write_text(out / "report.html", to_html(title, head, sections, out))
    return ReportFiles(md, html_path, list(plot_paths.values()), dag_json, dag_dot)
