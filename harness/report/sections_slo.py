"""The report's SLO and latency tables with how sure each number is: each SLO target's verdict
(PASS / FAIL / INCONCLUSIVE), the one-sided bounds it rests on and the rule that decided it; each
latency statistic with its confidence interval (``summary.intervals``)."""

from __future__ import annotations

from typing import Any, Callable

from harness.report.rows import fmt
from harness.report.slo_table import bounds_text, verdict_text

LATENCY_STATS = ("mean", "median", "p90", "p99")


def slo_rows(
    summary: dict, prediction: Callable[[str], str], claims: bool
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the SLO table; ``prediction(target)``: the planner bound's text."""
    rows = summary.get("slo") or []
    conf = next((r.get("confidence") for r in rows if r.get("confidence")), None)
    bounds = f"bounds (one-sided {conf * 100:g} %)" if conf else "bounds"
    out = []
    for r in rows:
        target = str(r.get("target"))
        margin = r.get("margin_pct")
        row = [
            target,
            prediction(target),
            fmt(r.get("measured")),
            bounds_text(r.get("low"), r.get("high")) if "low" in r else "—",
            "—" if margin is None else f"{margin:+.1f} %",
        ]
        if claims:
            row.append("—")
        out.append(row + [verdict_text(r), str(r.get("rule") or "—")])
    hdr = ["SLO target", "predicted (planner bound)", "measured", bounds, "margin"]
    hdr += ["claimed", "verdict", "rule"] if claims else ["verdict", "rule"]
    return hdr, out


def _cell(block: dict, intervals: dict, key: str) -> str:
    text = fmt(block.get(key))
    iv = intervals.get(key)
    if block.get(key) is not None and isinstance(iv, dict):
        text += " " + bounds_text(iv.get("low"), iv.get("high"))
    return text


def latency_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the latency table: each statistic with its interval where the summary
    has one (the metrics from the send have none)."""
    m = summary.get("metrics") or {}
    block = summary.get("intervals") if isinstance(summary.get("intervals"), dict) else {}
    intervals: dict[str, Any] = block.get("metrics") or {}
    conf = block.get("confidence")
    rows = [
        [name] + [_cell(m, intervals, f"{st}_{key}_ms") for st in LATENCY_STATS]
        for name, key in (
            ("TTFT", "ttft"),
            ("TPOT", "tpot"),
            ("ITL", "itl"),
            ("E2E", "e2el"),
            ("queue", "queue"),
        )
    ]
    send = summary.get("metrics_from_send")
    if isinstance(send, dict):  # a request went after its arrival: vLLM's origin too
        for name, key in (
            ("TTFT from the send", "ttft"),
            ("E2E from the send", "e2el"),
            ("client queue", "client_queue"),
        ):
            rows.append([name] + [fmt(send.get(f"{st}_{key}_ms")) for st in LATENCY_STATS])
    head = "latency (ms)" + (f" [{conf * 100:g} % interval]" if conf else "")
    return [head, *LATENCY_STATS], rows


def rate_text(summary: dict, key: str) -> str:
    """A rate with its interval, for the report's rates table."""
    block = summary.get("intervals") if isinstance(summary.get("intervals"), dict) else {}
    return _cell(summary.get("metrics") or {}, block.get("metrics") or {}, key)
