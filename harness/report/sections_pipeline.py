"""Report sections on the parallel layout as it ran: TP groups, PP stages, communication and the
DAG."""

from __future__ import annotations

from harness.report import analysis as an
from harness.report.dag import node_count
from harness.report.doc import Image, Section, Table, Text
from harness.report.rows import Ctx, agreement, check_header, claim_row, fmt, fmt_bytes, fmt_s
from harness.report.sections_vllm import trace_lines


def tp_groups(ctx: Ctx) -> Section:
    run = ctx.run
    lay = run.layout()
    rows = [claim_row(ctx, "tp_allreduce_bytes_per_layer", 0.01)]
    g_rows = []
    for g in an.tp_groups(lay, run.comm, run.stages):
        g_rows.append(
            [
                " ".join(map(str, g["ranks"])),
                str(g["dp"]),
                str(g["stage"]),
                g["layers"],
                fmt(g["allreduce_per_step"]),
                fmt_bytes(g["bytes_per_op"]),
                fmt_bytes(g["allreduce_bytes"]),
                fmt_s(g["allreduce_time_s"]),
            ]
        )
    blocks = [
        Table(check_header(ctx), rows),
        Table(
            [
                "TP group ranks",
                "dp",
                "stage",
                "layers",
                "all-reduces per step per rank",
                "bytes per op",
                "total bytes",
                "total time",
            ],
            g_rows,
        ),
    ]
    if lay.tp == 1:
        blocks.append(Text("tp = 1: no TP group communicates.", "note"))
    return Section("TP groups", blocks)


def pp_stages(ctx: Ctx) -> Section:
    run = ctx.run
    lay = run.layout()
    stats = {int(s["stage"]): s for s in an.stage_stats(run)}
    mem = {s["stage"]: s for s in an.memory_by_stage(run.memory)}
    send = {}
    for a in an.comm_by(run.comm, ("rank", "group", "op")):
        if a["group"] in ("pp", "pp_residual") and a["op"] == "send":
            s = lay.place(a["rank"]).stage
            send[s] = send.get(s, 0) + a["bytes"]
    pred_stages = {s["stage"]: s for s in (run.summary.get("predicted") or {}).get("stages") or []}
    rows = [claim_row(ctx, "pp_sendrecv_bytes_per_stage", 0.01)]
    s_rows = []
    for s in range(lay.pp):
        r = lay.layers_of_stage(s)
        holds = (
            ", ".join(
                (["embedding"] if s == 0 else []) + (["norm + lm_head"] if s == lay.pp - 1 else [])
            )
            or "—"
        )
        ps, ms, st = pred_stages.get(s, {}), mem.get(s, {}), stats.get(s, {})
        pw, mw = ps.get("weight_bytes_per_rank"), ms.get("param_bytes")
        s_rows.append(
            [
                str(s),
                f"{r.start}-{r.stop - 1} ({len(r)})",
                holds,
                fmt_bytes(pw),
                fmt_bytes(mw),
                agreement(pw, mw, 0.01),
                fmt_s(st.get("compute_s")),
                fmt_s(st.get("wait_s")),
                fmt_bytes(send.get(s)),
            ]
        )
    return Section(
        "PP stages",
        [
            Table(check_header(ctx), rows),
            *trace_lines(run.summary)[:1],
            Table(
                [
                    "stage",
                    "layers",
                    "also holds",
                    "predicted weights/rank",
                    "measured params/rank",
                    "verdict",
                    "compute",
                    "wait",
                    "bytes sent",
                ],
                s_rows,
            ),
            Image(ctx.plots["pipeline"], "Pipeline timeline: wait / compute / send per stage"),
        ],
    )


def communication(ctx: Ctx) -> Section:
    run = ctx.run
    groups = an.comm_by(run.comm)
    wall = run.summary.get("wall_s")
    rows = [claim_row(ctx, "nvlink_utilization_pct")]
    if (run.summary.get("hardware") or {}).get("gpu") == "cpu":
        rows[0][-1] = "not available on this hardware (CPU twin)"
    c_rows = [
        [
            g["group"],
            g["op"],
            fmt(g["count"]),
            fmt_bytes(g["bytes"]),
            fmt_s(g["time_s"]),
            fmt(len(g["ranks"])),
            fmt(g["bytes"] / g["count"] if g["count"] else None),
        ]
        for g in groups
    ]
    blocks = [Table(check_header(ctx), rows), *trace_lines(run.summary)]
    absent = run.absent_note("comm")
    empty = f"Communication {absent}." if absent else "No communication was recorded."
    blocks.append(
        Table(
            [
                "group",
                "op",
                "calls (all ranks)",
                "bytes",
                "time (sum over ranks)",
                "ranks",
                "bytes per call",
            ],
            c_rows,
        )
        if c_rows
        else Text(empty, "note")
    )
    if wall:
        blocks.append(
            Text(f"Run wall time {fmt(wall)} s; times above are summed over every rank's ops.")
        )
    if any(g["op"] == "send" for g in groups):
        blocks.append(
            Text(
                "Sends are asynchronous (isend): a send's time runs from its post to the wait that "
                "retires it, which the pipeline defers, so it is not transfer time. A recv's time "
                "includes waiting for the previous stage.",
                "note",
            )
        )
    blocks += [
        Image(ctx.plots["comm"], "Communication time and bytes per group"),
        Image(ctx.plots["nvlink"], "NVLink throughput"),
    ]
    return Section("Communication nodes", blocks)


def dag_section(ctx: Ctx) -> Section:
    dag = ctx.dag
    if dag is None:
        return Section(
            "DAG", [Text(f"No graph: the model's layers are unknown ({ctx.run.plan_note()}).")]
        )
    lay = dag.layout
    on_nodes = sum(n.bytes or 0 for n in dag.nodes if n.kind == "comm")
    heavy = sorted((n for n in dag.nodes if n.time_s and n.op != "send"), key=lambda n: -n.time_s)[
        :6
    ]
    rows = [
        [
            "nodes",
            str(node_count(lay)),
            str(len(dag.nodes)),
            "match" if len(dag.nodes) == node_count(lay) else "mismatch",
        ],
        ["edges", "—", str(len(dag.edges)), "every edge joins two nodes"],
        [
            "comm bytes on nodes vs comm table",
            fmt_bytes(dag.comm_table_bytes),
            fmt_bytes(on_nodes),
            "match"
            if on_nodes == dag.comm_table_bytes
            else f"differs: {fmt_bytes(dag.comm_table_bytes - on_nodes)} in ops with no DAG node",
        ],
    ]
    blocks = [
        Text(
            "The graph that ran: per-rank compute blocks (embedding, each layer's attention and "
            "MLP, "
            "final norm + lm_head) and communication ops (TP all-reduce / all-gather / broadcast, "
            "PP "
            "send/recv, tokens back to stage 0); edges are data dependencies. Files: "
            + ", ".join(ctx.dag_files)
            + " (render the DOT with `dot -Tsvg dag.dot`)."
        ),
        Table(["check", "formula / table", "DAG", "verdict"], rows),
    ]
    if heavy:
        blocks.append(
            Table(
                [
                    "most time-consuming nodes (async sends left out)",
                    "rank",
                    "stage",
                    "time",
                    "bytes",
                    "time source",
                ],
                [
                    [
                        n.id,
                        str(n.rank),
                        str(n.stage),
                        fmt_s(n.time_s),
                        fmt_bytes(n.bytes),
                        n.time_source or "",
                    ]
                    for n in heavy
                ],
            )
        )
    if dag.unmatched:
        blocks.append(
            Text(
                "Traffic with no DAG node: "
                + "; ".join(
                    f"rank {u['rank']} {u['kind']}: {fmt_bytes(u['bytes'])}"
                    for u in dag.unmatched[:8]
                ),
                "note",
            )
        )
    return Section("DAG", blocks)
