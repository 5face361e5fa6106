"""The plain-text SLO table ``harness run`` prints at the end of a run: each target with its
measured value, the one-sided bounds its verdict rests on, the verdict (PASS / FAIL / INCONCLUSIVE,
with the requests that would decide an inconclusive one) and the rule that decided it; then the
headline rates and latencies with their intervals."""

from __future__ import annotations

import textwrap


def _num(x) -> str:
    if x is None:
        return "open"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def bounds_text(low, high) -> str:
    """``[low, high]``, "open" on a side the data bound nothing."""
    return f"[{_num(low)}, {_num(high)}]"


def verdict_text(row: dict) -> str:
    """PASS / FAIL / INCONCLUSIVE (+ the requests that would decide it) / NOT MEASURED, from a
    summary ``slo`` row (older rows: from ``passed``); a forecast's row (``basis``,
    ``harness.predict.verdicts``): "(point only)" after a verdict on the point forecast alone, and
    no request count after INCONCLUSIVE (more requests do not decide a forecast)."""
    v = row.get("verdict") or {True: "PASS", False: "FAIL"}.get(row.get("passed"), "UNMEASURED")
    if v == "UNMEASURED":
        return "NOT MEASURED"
    if row.get("basis") == "point":
        return f"{v} (point only)"
    if v != "INCONCLUSIVE" or row.get("basis"):
        return v
    more = row.get("more_requests")
    return "INCONCLUSIVE" + (" (never)" if more is None else f" (+{more} requests)")


def _with_interval(m: dict, intervals: dict, key: str, unit: str) -> str:
    x = m.get(key)
    if x is None:
        return "-"
    iv = intervals.get(key)
    text = f"{x:.3g}"
    if isinstance(iv, dict):
        text += " " + bounds_text(iv.get("low"), iv.get("high"))
    return f"{text} {unit}"


def sequential_text(summary: dict) -> str | None:
    """One line on a run until decided (``summary.sequential``): why it stopped, at which look,
    on how many requests of its budget, and the error rate the looks keep; None for other runs."""
    seq = summary.get("sequential")
    if not isinstance(seq, dict) or not isinstance(seq.get("final"), dict):
        return None
    final, conf = seq["final"], float(seq.get("confidence") or 0.95)
    return (
        f"run until decided: stopped by {seq.get('stopped')}; verdicts from look "
        f"{final.get('look')} (the first {final.get('n')} arrivals, judged at "
        f"{float(final.get('confidence') or 0) * 100:.4g} %); {seq.get('requests_served')} of a "
        f"budget of {seq.get('request_budget')} requests served; looks at "
        f"{seq.get('schedule')}, {(1 - conf) * 100:.3g} % spent over them in proportion to n, so a "
        f"verdict errs with probability at most {(1 - conf) * 100:.3g} % however many looks ran"
    )


def slo_table(summary: dict) -> str:
    """The run's SLO verdicts and headline statistics as a plain-text table."""
    m = summary.get("metrics") or {}
    block = summary.get("intervals") if isinstance(summary.get("intervals"), dict) else {}
    intervals = block.get("metrics") or {}
    rows = summary.get("slo") or []
    conf = next((r.get("confidence") for r in rows if r.get("confidence")), None)
    bounds_head = f"{conf * 100:g} % bounds" if conf else "bounds"
    lines = [
        f"{'SLO target':<24} {'measured':>9} {bounds_head:>18} {'margin':>8}  verdict",
        "-" * 99,
    ]
    for v in rows:
        measured = "-" if v.get("measured") is None else f"{v['measured']:.3g}"
        margin = "-" if v.get("margin_pct") is None else f"{v['margin_pct']:+.1f}%"
        bounds = bounds_text(v.get("low"), v.get("high")) if "low" in v else "-"
        lines.append(f"{v['target']:<24} {measured:>9} {bounds:>18} {margin:>8}  {verdict_text(v)}")
        if v.get("rule"):
            lines += textwrap.wrap(
                f"rule: {v['rule']}", 99, initial_indent="  ", subsequent_indent="    "
            )
    lines.append("-" * 99)
    if conf:
        lines += textwrap.wrap(
            f"bounds: one-sided at {conf * 100:g} % each (a verdict errs with probability at most "
            f"{(1 - conf) * 100:.3g} %); INCONCLUSIVE (+N requests): N more requests would decide "
            "it if the run went on as it went (never: no run length would); intervals below: "
            f"two-sided at {(block.get('confidence') or conf) * 100:g} %",
            99,
            subsequent_indent="  ",
        )
    seq = sequential_text(summary)
    if seq:
        lines += textwrap.wrap(seq, 99, subsequent_indent="  ")
    lines.append(
        f"requests {m.get('completed')}, throughput "
        f"{_with_interval(m, intervals, 'request_throughput', 'req/s')}, goodput "
        f"{_with_interval(m, intervals, 'request_goodput', 'req/s')}"
    )
    lines.append(
        f"TTFT p50 {_with_interval(m, intervals, 'p50_ttft_ms', 'ms')}, p99 "
        f"{_with_interval(m, intervals, 'p99_ttft_ms', 'ms')}"
    )
    lines.append(
        f"TPOT p50 {_with_interval(m, intervals, 'p50_tpot_ms', 'ms')}, p99 "
        f"{_with_interval(m, intervals, 'p99_tpot_ms', 'ms')}"
    )
    caveat = summary.get("slo_preset") if isinstance(summary.get("slo_preset"), dict) else None
    if caveat:  # a named preset borrows a benchmark's limits, not its rules
        lines += textwrap.wrap(
            f"preset {caveat.get('preset')}: {caveat.get('note')}", 99, subsequent_indent="  "
        )
        if caveat.get("warning"):
            lines += textwrap.wrap(f"WARNING: {caveat['warning']}", 99, subsequent_indent="  ")
    lines.append(f"overall: {summary.get('verdict')}")
    return "\n".join(lines)
