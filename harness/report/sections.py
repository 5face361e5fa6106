"""The report's sections in order, built from a loaded run (no measuring, no I/O besides what it is
given).

Sections mirror the seed report: hardware, memory, performance vs SLOs, load balancing, TP groups,
PP stages, communication nodes, DAG, nodes to modify; then claims, cross-checks and notes.
Resource sections live in sections_resources, layout sections in sections_pipeline, the check-row
toolkit (context, formatting, agreement) in rows; this module holds the verdict sections
(performance vs SLOs, nodes to modify, claims, cross-checks), the intro and the order.
"""

from __future__ import annotations

from typing import Any

from harness.report.doc import Bullets, Image, Section, Table, Text
from harness.report.rows import (
    CLAIM_LABELS,
    TOL,
    Ctx,
    agreement,
    check_header,
    check_row,
    claim_row,
    fmt,
    fmt_bytes,
    fmt_s,
    predicted_claims,
)
from harness.report.sections_engine import engine_section
from harness.report.sections_imported import imported_section
from harness.report.sections_loadgen import loadgen_section
from harness.report.sections_pipeline import communication, dag_section, pp_stages, tp_groups
from harness.report.sections_resources import hardware, load_balancing, memory
from harness.report.sections_slo import latency_rows, rate_text
from harness.report.sections_slo import slo_rows as slo_table_rows
from harness.report.slo_table import sequential_text

__all__ = [
    "CLAIM_LABELS",
    "TOL",
    "Ctx",
    "agreement",
    "build_sections",
    "claim_row",
    "claims",
    "communication",
    "cross_checks",
    "dag_section",
    "fmt",
    "fmt_bytes",
    "fmt_s",
    "hardware",
    "intro",
    "load_balancing",
    "memory",
    "nodes_to_modify",
    "performance",
    "pp_stages",
    "predicted_claims",
    "tp_groups",
]


def performance(ctx: Ctx) -> Section:
    run = ctx.run
    m = run.summary.get("metrics") or {}
    bounds = (run.summary.get("predicted") or {}).get("bounds") or {}
    hdr, slo_rows = slo_table_rows(
        run.summary, lambda target: _slo_prediction(target, bounds), ctx.claims is not None
    )
    lat_hdr, lat_rows = latency_rows(run.summary)
    rates = [
        claim_row(ctx, "throughput_rps", 1e9, "throughput (requests/s; predicted = upper bound)"),
        check_row(
            ctx,
            "goodput (requests/s meeting every SLO)",
            None,
            m.get("request_goodput"),
            "measured only",
        ),
        check_row(ctx, "output tokens/s", None, m.get("output_throughput"), "measured only"),
    ]
    rates[0][-1] = _bound_verdict(ctx.predicted.get("throughput_rps"), m.get("request_throughput"))
    counts = (
        f"{m.get('completed', 0)} of {m.get('num_requests', 0)} requests completed "
        f"({m.get('failed', 0)} failed, {m.get('incomplete', 0)} unfinished) over "
        f"{fmt(m.get('duration_s'))} s; "
        f"warm-up: {m.get('warmup_requests', 0)} requests in {fmt(run.summary.get('warmup_s'))} s, "
        f"excluded."
    )
    caveat = (
        run.summary.get("slo_preset") if isinstance(run.summary.get("slo_preset"), dict) else {}
    )
    preset = (
        [
            Text(
                f"Preset {caveat.get('preset')}: {caveat.get('note')}."
                + (f" Warning: {caveat['warning']}." if caveat.get("warning") else ""),
                "note",
            )
        ]
        if caveat
        else []
    )
    budget = ((run.summary.get("predicted") or {}).get("run") or {}).get("max_num_batched_tokens")
    if budget:
        counts += (
            f" Chunked prefill: at most {budget} tokens per micro-batch, decode rows first "
            f"(predicted TTFT: the mean prompt in {bounds.get('prefill_chunks', 1)} chunk(s))."
        )
    errors = [Text(e, "note") for e in floor_errors(bounds, m)]
    seq = sequential_text(run.summary)
    if seq:
        errors.append(Text(seq[0].upper() + seq[1:] + ".", "note"))
    return Section(
        "Performance vs SLOs",
        [
            Text(f"Overall: {run.summary.get('verdict')}"),
            Text(counts),
            *errors,
            Table(hdr, slo_rows)
            if slo_rows
            else Text("No SLO targets in the spec: verdict UNMEASURED.", "note"),
            *preset,
            Table(check_header(ctx), rates),
            Text(
                "With their confidence intervals: throughput "
                f"{rate_text(run.summary, 'request_throughput')} req/s, goodput "
                f"{rate_text(run.summary, 'request_goodput')} req/s, output "
                f"{rate_text(run.summary, 'output_throughput')} tokens/s.",
                "note",
            ),
            Table(lat_hdr, lat_rows),
            Image(ctx.plots["latency"], "TTFT / TPOT / E2E CDFs with the SLO targets"),
            Image(ctx.plots["throughput"], "Throughput over time"),
        ],
    )


FLOORS = (
    ("TPOT", "tpot_floor_s", "median_tpot_ms"),
    ("TTFT", "ttft_floor_s", "median_ttft_ms"),
    ("E2E", "e2e_floor_s", "median_e2el_ms"),
)


def floor_errors(bounds: dict, metrics: dict) -> list[str]:
    """A planner floor above a measurement of the same thing is the planner's error, never the
    run's: the floor (one request alone, mean lengths) above the median request's measured time
    means most requests did better than the physics the planner claims."""
    out = []
    for name, floor_key, measured_key in FLOORS:
        floor, measured = bounds.get(floor_key), metrics.get(measured_key)
        if floor is not None and measured is not None and floor * 1e3 > measured * 1.0001:
            out.append(
                f"Planner error: the {name} floor {floor * 1e3:.3g} ms is above the measured "
                f"median "
                f"{measured:.3g} ms (the planner's device numbers or formula are off; see harness "
                f"plan)."
            )
    return out


def _bound_verdict(bound: Any, measured: Any) -> str:
    if measured is None:
        return "not measured"
    if bound is None:
        return "measured only"
    return "within bound" if measured <= bound * 1.0001 else "above the bound (check the planner)"


def _slo_prediction(target: str, bounds: dict) -> str:
    """The planner's bound on a target's metric, in either spelling (``ttft_p99_ms``,
    ``p99_ttft_ms``)."""
    from harness.errors import UsageError
    from harness.spec.slo import parse_target

    try:
        t = parse_target(target)
    except UsageError:
        return "—"
    floors = {"tpot": "tpot_at_rows_s", "ttft": "ttft_floor_s", "e2e": "e2e_floor_s"}
    if t.metric in floors and bounds.get(floors[t.metric]) is not None:
        return f"≥ {bounds[floors[t.metric]] * 1e3:.3g} ms"
    if t.summary_key == "request_throughput" and bounds.get("rps_bound") is not None:
        return f"≤ {bounds['rps_bound']:.3g} /s"
    return "—"


def nodes_to_modify(ctx: Ctx) -> Section:
    adv = ctx.advice
    blocks = []
    if adv.changes:
        blocks.append(
            Table(
                ["nodes", "change", "predicted effect", "evidence"],
                [[c.nodes, c.change, c.effect, c.evidence] for c in adv.changes],
            )
        )
    elif adv.none_needed:
        blocks.append(
            Text(
                "None needed: every rule was judged on measurements and none fired "
                f"({', '.join(adv.checked)})."
            )
        )
    else:
        blocks.append(Text("No change found, but not every rule could be judged.", "note"))
    if adv.unjudged:
        blocks.append(Text("Not judged (measurements missing): " + ", ".join(adv.unjudged), "note"))
    if not ctx.run.complete:
        blocks.append(
            Text("The run is incomplete: these findings rest on partial measurements.", "note")
        )
    hw = ctx.run.summary.get("hardware") or {}
    if adv.changes and (hw.get("gpu") == "cpu" or hw.get("backend") == "gloo"):
        blocks.append(
            Text(
                "CPU twin: the time-based findings measure gloo ranks sharing a few CPU cores (a "
                "collective waits for its peer process to be scheduled); they show the method, not "
                "what the GPU deployment needs. Re-run on the target GPUs before changing it.",
                "note",
            )
        )
    return Section("Nodes to modify", blocks)


def claims(ctx: Ctx) -> Section | None:
    if ctx.claims is None:
        return None
    rows = [
        [
            str(c.get("id")) + ("" if c.get("index") is None else f"[{c['index']}]"),
            str(c.get("text", ""))[:120],
            fmt(c.get("claimed")),
            fmt(c.get("expected")),
            str(c.get("verdict")),
            str(c.get("source", "")),
            str(c.get("reason", "")),
        ]
        for c in ctx.claims
    ]
    counts = {}
    for c in ctx.claims:
        key = (c.get("verdict"), c.get("source"))
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(
        f"{n} {v} ({s})" for (v, s), n in sorted(counts.items(), key=lambda x: str(x[0]))
    )
    blocks = [
        Text(
            f"{len(ctx.claims)} claims from {ctx.claims_source}: {tally or 'none found'}. "
            "'source' says whether a verdict comes from this run's measurement, the planner's "
            "prediction, or the report's own statements."
        ),
        Table(
            ["id", "claim", "claimed", "expected / measured", "verdict", "source", "reason"], rows
        ),
    ]
    if ctx.claim_notes:
        blocks.append(Bullets(list(ctx.claim_notes)))
    return Section("Claims", blocks)


def cross_checks(ctx: Ctx) -> Section:
    run = ctx.run
    checks = run.summary.get("cross_checks") or []
    rows = [
        [
            str(c.get("name")),
            fmt(c.get("expected"))
            if not isinstance(c.get("expected"), dict)
            else ", ".join(f"{k} {fmt(v)}" for k, v in c["expected"].items()),
            fmt(c.get("measured"))
            if not isinstance(c.get("measured"), dict)
            else ", ".join(f"{k} {fmt(v)}" for k, v in c["measured"].items()),
            "ok" if c.get("ok") else "mismatch",
            str(c.get("detail") or ""),
        ]
        for c in checks
    ]
    bad = sum(1 for c in checks if not c.get("ok"))
    blocks = (
        [Text(f"{len(checks)} checks, {bad} failed.")]
        if checks
        else [Text("No cross-checks recorded.", "note")]
    )
    if rows:
        blocks.append(Table(["check", "expected", "measured", "verdict", "detail"], rows))
    notes = run.summary.get("notes") or []
    if notes:
        blocks.append(Bullets([str(n) for n in notes]))
    return Section("Cross-checks and notes", blocks)


def build_sections(ctx: Ctx) -> list[Section]:
    out = [
        hardware(ctx),
        memory(ctx),
        performance(ctx),
        engine_section(ctx),
        loadgen_section(ctx),
        imported_section(ctx),
        load_balancing(ctx),
        tp_groups(ctx),
        pp_stages(ctx),
        communication(ctx),
        dag_section(ctx),
        nodes_to_modify(ctx),
    ]
    out = [s for s in out if s is not None]  # engine/loadgen sections: only where they apply
    c = claims(ctx)
    if c is not None:
        out.append(c)
    out.append(cross_checks(ctx))
    return out


def intro(ctx: Ctx) -> list:
    s = ctx.run.summary
    hw = s.get("hardware") or {}
    lay = s.get("layout") or {}
    lines = [
        Text(
            f"Verdict: {s.get('verdict')}"
            + (
                ""
                if s.get("complete")
                else f" (the run did not finish: {s.get('incomplete_reason')})"
            )
        ),
        Text(
            f"Run {s.get('name')} · started {s.get('started_utc')} · finished "
            f"{s.get('finished_utc') or '—'} · "
            f"wall {fmt(s.get('wall_s'))} s · {hw.get('total_gpus')} × "
            f"{hw.get('gpu_name') or hw.get('gpu')} "
            f"({hw.get('backend')}) · tp {lay.get('tp')} pp {lay.get('pp')} dp {lay.get('dp')} "
            f"split {lay.get('layer_split')}"
        ),
        Text(f"Run directory: {ctx.run.path}"),
    ]
    if ctx.run.plan_note():  # an import without its model (or hardware): nothing predicted
        lines.append(Text(f"{ctx.run.plan_note()[0].upper()}{ctx.run.plan_note()[1:]}."))
    eng = s.get("engine") if isinstance(s.get("engine"), dict) else None
    if eng and eng.get("kind") not in (None, "reference"):
        lines.append(
            Text(
                (
                    f"Served by an external engine: {eng.get('kind')} {eng.get('version') or ''}"
                ).rstrip()
                + " (see System under test); "
                + (
                    "communication and stages from vLLM's own profiler in a window apart from "
                    "the measured one."
                    if (s.get("vllm_trace") or {}).get("files")
                    else "no communication or stage trace."
                )
            )
        )
    if not s.get("complete"):
        lines.append(
            Text("This run did not finish: every number below covers only what completed.", "note")
        )
    return lines
