"""The markdown of a repeats folder (``harness run --repeats N``): every run with its verdict and
key metrics, the SLO verdicts across runs, and each key metric across runs (mean, interval, the
run-to-run spread beside the within-run one). Pure: ``repeats.json``'s document in, text out."""

from __future__ import annotations

from typing import Any, Mapping

KEYS = (
    "request_throughput",
    "output_throughput",
    "request_goodput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "p99_e2el_ms",
    "p99_queue_ms",
)


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{v:.1f} %"


def repeats_markdown(doc: Mapping[str, Any]) -> str:
    runs = doc.get("runs") or []
    metrics = doc.get("metrics") or {}
    conf = float(doc.get("confidence") or 0.95)
    lines = [
        f"# Repeats: {doc.get('name')}",
        "",
        f"{doc.get('repeats')} runs, {doc.get('complete_runs')} complete; verdict across runs: "
        f"**{doc.get('verdict')}** (confidence {conf:g}).",
        "",
        f"Served by: {doc.get('served_by')}.",
        "",
        "## Every run",
        "",
    ]
    shown = [k for k in KEYS if k in metrics]
    done = [r for r in runs if r.get("complete")]
    lines.append("| run | complete | verdict | " + " | ".join(shown) + " |")
    lines.append("|---" * (3 + len(shown)) + "|")
    for i, r in enumerate(runs):
        j = done.index(r) if r in done else None
        vals = [_num(metrics[k]["values"][j]) if j is not None else "—" for k in shown]
        reason = "" if r.get("complete") else f" ({r.get('incomplete_reason')})"
        lines.append(
            f"| [{r['dir']}]({r['dir']}/report.md) | {'yes' if r.get('complete') else 'no'} | "
            f"{r.get('verdict')}{reason} | " + " | ".join(vals) + " |"
        )
    lines += ["", "## SLO verdicts across runs", ""]
    if doc.get("slo"):
        lines += [
            "| target | each run | mean over runs | one-sided bounds | verdict | rule |",
            "|---|---|---|---|---|---|",
        ]
        for s in doc["slo"]:
            each = ", ".join(str(v) for v in s.get("per_run") or [])
            bounds = f"{_num(s.get('low'))} .. {_num(s.get('high'))}"
            lines.append(
                f"| `{s['target']}` | {each} | {_num(s.get('measured'))} | {bounds} | "
                f"**{s['verdict']}** | {s.get('rule')} |"
            )
    else:
        lines.append("No SLO targets.")
    lines += [
        "",
        "## Metrics across runs",
        "",
        f"Mean over runs with its {conf * 100:g} % interval (Student t over runs); the run-to-run "
        "standard deviation beside each run's own standard error (from its within-run interval), "
        "both in % of the value. Every metric: `repeats.json`.",
        "",
        "| metric | mean | interval | run-to-run sd | within-run se |",
        "|---|---|---|---|---|",
    ]
    for k in shown:
        m = metrics[k]
        lines.append(
            f"| {k} | {_num(m['mean'])} | {_num(m['low'])} .. {_num(m['high'])} | "
            f"{_pct(m['run_to_run_sd_pct'])} | {_pct(m['within_run_sd_pct'])} |"
        )
    return "\n".join(lines) + "\n"
