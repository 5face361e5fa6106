"""The "MLPerf LoadGen" section of a run LoadGen drove (``harness run --loadgen``): LoadGen's own
verdict beside ours, which rules failed, the duration rule it applied, what it was told, and its
percentiles beside ours from the same requests. Any other run has no such section."""

from __future__ import annotations

from harness.report.doc import Section, Table, Text
from harness.report.rows import Ctx, fmt


def loadgen_section(ctx: Ctx) -> Section | None:
    s = ctx.run.summary
    lg = s.get("loadgen") if isinstance(s.get("loadgen"), dict) else None
    if lg is None:
        return None
    st = lg.get("settings") or {}
    failed = lg.get("failed") or []
    blocks: list = [
        Text(
            f"LoadGen {st.get('scenario')} verdict: {lg.get('validity') or 'no result'}"
            + (f" (failed: {'; '.join(failed)})" if failed else "")
            + f"; ours: {s.get('verdict')}. {lg.get('rules', '')}."
        ),
        Table(
            ["LoadGen setting", "value"],
            [
                ["target rate (Server)", fmt(st.get("target_qps"))],
                ["TTFT limit (ms)", fmt(st.get("ttft_limit_ms"))],
                ["TPOT limit (ms)", fmt(st.get("tpot_limit_ms"))],
                ["percentile", fmt(st.get("percentile"))],
                ["min query count", fmt(st.get("min_query_count"))],
                ["min duration (ms)", fmt(st.get("min_duration_ms"))],
                ["queries issued", fmt(lg.get("issued"))],
            ],
        ),
    ]
    if lg.get("recommendation"):
        blocks.append(Text(f"LoadGen: {lg['recommendation']}", "note"))
    rows = lg.get("agreement") or []
    if rows:
        blocks.append(
            Text(
                "LoadGen's percentiles against ours from the same requests, both by LoadGen's rule "
                "(the sorted sample at ⌊N·p⌋): a check of the two clocks (within 1 % or 1 ms)."
            )
        )
        blocks.append(
            Table(
                ["metric", "LoadGen (ms)", "ours (ms)", "ours − LoadGen (ms)", "within"],
                [
                    [
                        r["metric"],
                        fmt(r["loadgen_ms"]),
                        fmt(r["ours_ms"]),
                        fmt(r["diff_ms"]),
                        "yes" if r["within"] else "NO",
                    ]
                    for r in rows
                ],
            )
        )
    if lg.get("note"):
        blocks.append(Text(str(lg["note"]), "note"))
    return Section("MLPerf LoadGen", blocks)
