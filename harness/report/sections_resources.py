"""Report sections on the resources a run used: hardware, memory and load balancing."""

from __future__ import annotations

from harness.report import analysis as an
from harness.report.doc import Image, Section, Table, Text
from harness.report.rows import (
    CLAIM_LABELS,
    Ctx,
    check_header,
    check_row,
    claim_row,
    fmt,
    fmt_bytes,
    fmt_s,
)


def hardware(ctx: Ctx) -> Section:
    run = ctx.run
    hw, env, spec = run.summary.get("hardware") or {}, run.env, run.spec or {}
    cluster = spec.get("cluster") or {}
    lay = run.layout()
    planned_gpu = cluster.get("gpu", "—")
    ran_gpu = hw.get("gpu_name") or hw.get("gpu") or "—"
    if hw.get("gpu") == "cpu" or hw.get("backend") == "gloo":
        gpu_verdict = (
            "CPU twin (gloo ranks stand in for the GPUs)"
            if planned_gpu != "cpu"
            else "match (CPU twin)"
        )
    else:
        gpu_verdict = (
            "match"
            if str(planned_gpu).lower() in str(ran_gpu).lower() or hw.get("gpu") == planned_gpu
            else "mismatch"
        )
    hosts = env.get("hostnames") or hw.get("hosts") or []
    nodes_m = hw.get("nodes") or len(hosts) or None
    rows = [
        claim_row(ctx, "total_gpus", 0.0),
        check_row(ctx, "GPU type", planned_gpu, ran_gpu, gpu_verdict, "gpu_type"),
        check_row(
            ctx,
            "nodes",
            cluster.get("nodes"),
            nodes_m,
            "match"
            if nodes_m == cluster.get("nodes")
            else "mismatch"
            if nodes_m
            else "not measured",
        ),
        check_row(
            ctx,
            "layout tp × pp × dp",
            f"{lay.tp} × {lay.pp} × {lay.dp}",
            f"{lay.tp} × {lay.pp} × {lay.dp}",
            "match",
        ),
        check_row(
            ctx,
            "backend",
            "nccl" if planned_gpu != "cpu" else "gloo",
            hw.get("backend") or "—",
            "match" if (hw.get("backend") == "nccl") == (planned_gpu != "cpu") else "CPU twin",
        ),
    ]
    transport = hw.get("tp_all_reduce")  # the reference engine's TP transport (none at TP 1)
    if transport and transport != "none":
        asked = (
            "nccl"
            if hw.get("backend") == "nccl"
            else (spec.get("run") or {}).get("cpu_all_reduce", "shm")
        )
        rows.append(
            check_row(
                ctx,
                "TP all-reduce",
                asked,
                transport,
                "match" if transport == asked else "fell back to gloo (notes say why)",
            )
        )
    versions = ", ".join(
        f"{k} {env.get(k)}"
        for k in (
            "harness_version",
            "git_sha",
            "python",
            "torch",
            "transformers",
            "cuda",
            "nccl",
            "driver",
        )
        if env.get(k)
    )
    blocks = [
        Table(check_header(ctx), rows),
        Text(
            f"Environment: {versions or 'not recorded'}; hosts: {', '.join(hosts) or '—'}"
            + (f"; Slurm job {env['slurm_job_id']}" if env.get("slurm_job_id") else "")
            + (
                f"; GPUs seen: {', '.join(env.get('gpu_names') or [])}"
                if env.get("gpu_names")
                else ""
            )
        ),
    ]
    return Section("Hardware", blocks)


def memory(ctx: Ctx) -> Section:
    run = ctx.run
    hw = run.summary.get("hardware") or {}
    cpu = hw.get("gpu") == "cpu" or hw.get("backend") == "gloo"
    capacity = (ctx.run.summary.get("predicted") or {}).get("gpu", {}).get("memory_bytes")
    rows = [
        claim_row(ctx, "memory_per_gpu_gb", 0.02),
        claim_row(ctx, "model_memory_gb", 0.02),
        claim_row(ctx, "memory_balance_epsilon", 0.05),
        claim_row(ctx, "stage_memory_gb", 0.02),
    ]
    per_stage = []
    for s in an.memory_by_stage(run.memory):
        peak = s["peak_bytes"]
        if cpu:
            verdict = "CPU twin: peak is the process RSS"
        elif capacity and peak is not None:
            verdict = "fits" if peak <= capacity else "over capacity"
        else:
            verdict = "not measured"
        per_stage.append(
            [
                str(s["stage"]),
                fmt_bytes(s["predicted_bytes"]),
                fmt_bytes(s["param_bytes"]),
                fmt_bytes(s["kv_bytes"]),
                fmt_bytes(peak),
                fmt_bytes(capacity),
                verdict,
            ]
        )
    blocks = [Table(check_header(ctx), rows)]
    blocks.append(
        Table(
            [
                "stage",
                "predicted weights + KV (max rank)",
                "measured params",
                "measured KV",
                "measured peak",
                "device capacity",
                "verdict",
            ],
            per_stage,
        )
        if per_stage
        else Text("No memory table in this run.", "note")
    )
    blocks.append(Image(ctx.plots["memory"], "Memory per rank: predicted vs measured"))
    if cpu:
        blocks.append(
            Text(
                "CPU twin: measured peak is each process's peak resident set (Python, libraries "
                "and "
                "tensors), not GPU memory.",
                "note",
            )
        )
    return Section("Memory", blocks)


def load_balancing(ctx: Ctx) -> Section:
    run = ctx.run
    lay = run.layout()
    stats = an.stage_stats(run)
    imb = an.imbalance(stats)
    b_pred, b_meas = (
        ctx.predicted.get("bubble_ratio"),
        (run.summary.get("measured") or {}).get("bubble_ratio"),
    )
    b_verdict = (
        "not measured"
        if b_meas is None
        else "measured only"
        if b_pred is None
        else "agrees"
        if abs(b_meas - b_pred) <= 0.05
        else f"differs ({b_meas - b_pred:+.2f})"
    )
    rows = [
        check_row(
            ctx,
            CLAIM_LABELS["bubble_ratio"] + " (predicted: (p−1)/(m+p−1))",
            b_pred,
            b_meas,
            b_verdict,
            "bubble_ratio",
        ),
        claim_row(ctx, "gpu_utilization_pct"),
        check_row(
            ctx,
            "stage compute imbalance (max/mean)",
            1.0,
            imb,
            "not measured" if imb is None else "balanced" if imb <= 1.10 else "imbalanced",
        ),
    ]
    st_rows = [
        [
            str(s["stage"]),
            str(lay.layer_split[int(s["stage"])]) if int(s["stage"]) < lay.pp else "?",
            fmt_s(s.get("compute_s")),
            fmt_s(s.get("wait_s")),
            fmt_s(s.get("send_s")),
            fmt(s.get("busy_fraction")),
            fmt(s.get("bubble_ratio")),
        ]
        for s in stats
    ]
    blocks = [Table(check_header(ctx), rows)]
    blocks.append(
        Table(
            ["stage", "layers", "compute", "wait", "send", "busy fraction", "bubble ratio"], st_rows
        )
        if st_rows
        else Text("No stage timings in this run.", "note")
    )
    blocks.append(Image(ctx.plots["utilization"], "Utilisation and power over time"))
    if (run.summary.get("hardware") or {}).get("gpu") == "cpu":
        blocks.append(
            Text(
                "CPU twin: no GPU utilisation exists; the plot shows the process's CPU % and RSS.",
                "note",
            )
        )
    return Section("Load balancing", blocks)
