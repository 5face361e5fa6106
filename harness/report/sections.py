"""The report's sections, built from a loaded run (no measuring, no I/O besides what it is given).

Sections mirror the seed report: hardware, memory, performance vs SLOs, load balancing, TP groups,
PP stages, communication nodes, DAG, nodes to modify; then claims, cross-checks and notes.
Each check row reads: quantity · predicted (the planner) · measured (this run) · [claimed] · verdict.
Predicted vs measured "agrees" when |measured − predicted| ≤ tolerance·|predicted| (TOL, or the
row's own), else "differs (+x %)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.report import analysis as an
from harness.report.dag import Dag, node_count
from harness.report.doc import Bullets, Image, Section, Table, Text
from harness.report.modify import Advice

TOL = 0.10

CLAIM_LABELS = {
    "total_gpus": "GPUs used", "memory_per_gpu_gb": "weights per GPU (GB, max rank)",
    "model_memory_gb": "model weights (GB, one replica)", "memory_balance_epsilon": "memory balance ε (max/mean − 1)",
    "stage_memory_gb": "weights per stage (GB)", "throughput_rps": "throughput (requests/s)",
    "gpu_utilization_pct": "GPU utilisation (%)", "bubble_ratio": "pipeline bubble ratio",
    "tp_allreduce_bytes_per_layer": "TP all-reduce bytes per layer per token",
    "pp_sendrecv_bytes_per_stage": "PP send/recv bytes per token per boundary",
    "nvlink_utilization_pct": "NVLink utilisation (%)",
}


@dataclass
class Ctx:
    run: Any
    plots: dict[str, str]
    dag: Dag
    dag_files: list[str]
    advice: Advice
    claims: list[dict] | None = None
    claims_source: str | None = None
    claim_notes: list[str] = field(default_factory=list)
    predicted: dict = field(default_factory=dict)

    def claim(self, cid: str) -> dict | None:
        """The claim with this id that is not per stage/group (index None), else the first."""
        found = [c for c in self.claims or [] if c.get("id") == cid]
        return next((c for c in found if c.get("index") is None), found[0] if found else None)


# ---------------------------------------------------------------- formatting

def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]"
    return str(v)


def fmt_bytes(b: Any) -> str:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return "—"
    b = float(b)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def fmt_s(s: Any) -> str:
    if s is None:
        return "—"
    return f"{s * 1e3:.3g} ms" if abs(s) < 1 else f"{s:.3g} s"


def agreement(predicted: Any, measured: Any, tol: float = TOL) -> str:
    if measured is None or (isinstance(measured, list) and not measured):
        return "not measured"
    if predicted is None or (isinstance(predicted, list) and not predicted):
        return "measured only"
    if isinstance(predicted, list) or isinstance(measured, list):
        p, m = list(predicted), list(measured)
        if len(p) != len(m):
            return "differs (length)"
        worst = [agreement(a, b, tol) for a, b in zip(p, m)]
        bad = [w for w in worst if w.startswith("differs")]
        return bad[0] if bad else "agrees"
    p, m = float(predicted), float(measured)
    if p == 0:
        return "agrees" if abs(m) <= tol else f"differs ({m:+.3g})"
    d = (m - p) / abs(p)
    return "agrees" if abs(d) <= tol else f"differs ({d * 100:+.0f} %)"


def _header(ctx: Ctx) -> list[str]:
    h = ["quantity", "predicted", "measured"]
    return h + (["claimed", "verdict"] if ctx.claims is not None else ["verdict"])


def _row(ctx: Ctx, label: str, predicted: Any, measured: Any, verdict: str, cid: str | None = None,
         f=fmt) -> list[str]:
    row = [label, f(predicted) if not isinstance(predicted, str) else predicted,
           f(measured) if not isinstance(measured, str) else measured]
    if ctx.claims is not None:
        c = ctx.claim(cid) if cid else None
        if c is None:
            row.append("—")
        else:
            row.append(fmt(c.get("claimed")))
            verdict = f"{verdict}; claim {c.get('verdict')}"
    row.append(verdict)
    return row


def claim_row(ctx: Ctx, cid: str, tol: float = TOL, label: str | None = None) -> list[str]:
    p = ctx.predicted.get(cid)
    m = (ctx.run.summary.get("measured") or {}).get(cid)
    return _row(ctx, label or CLAIM_LABELS.get(cid, cid), p, m, agreement(p, m, tol), cid)


def predicted_claims(predicted: dict, layout) -> dict[str, Any]:
    """The planner's plan (``summary.predicted``) as values keyed by claim id."""
    if not predicted:
        return {}
    flat = {k: predicted[k] for k in CLAIM_LABELS if k in predicted}
    ranks = predicted.get("ranks") or []
    stages = predicted.get("stages") or []
    comm = predicted.get("comm") or {}
    bounds = predicted.get("bounds") or {}
    if ranks:
        flat.setdefault("memory_per_gpu_gb", max(r["weight_bytes"] for r in ranks) / 1e9)
    if stages:
        flat.setdefault("stage_memory_gb", [s["weight_bytes"] / 1e9 for s in stages])
    if "model_weight_bytes" in predicted:
        flat.setdefault("model_memory_gb", predicted["model_weight_bytes"] / 1e9)
    if "weight_epsilon" in predicted:
        flat.setdefault("memory_balance_epsilon", predicted["weight_epsilon"])
    if comm:
        flat.setdefault("tp_allreduce_bytes_per_layer", comm.get("tp_allreduce_bytes_per_layer_per_token"))
        flat.setdefault("pp_sendrecv_bytes_per_stage", comm.get("pp_bytes_per_token_per_boundary"))
    if bounds:
        flat.setdefault("bubble_ratio", bounds.get("bubble_ratio"))
        flat.setdefault("throughput_rps", bounds.get("rps_bound"))
    if ranks or stages:
        flat.setdefault("total_gpus", layout.world_size)
    return flat


# ---------------------------------------------------------------- sections

def hardware(ctx: Ctx) -> Section:
    run = ctx.run
    hw, env, spec = run.summary.get("hardware") or {}, run.env, run.spec or {}
    cluster = spec.get("cluster") or {}
    lay = run.layout()
    planned_gpu = cluster.get("gpu", "—")
    ran_gpu = hw.get("gpu_name") or hw.get("gpu") or "—"
    if hw.get("gpu") == "cpu" or hw.get("backend") == "gloo":
        gpu_verdict = "CPU twin (gloo ranks stand in for the GPUs)" if planned_gpu != "cpu" else "match (CPU twin)"
    else:
        gpu_verdict = "match" if str(planned_gpu).lower() in str(ran_gpu).lower() or hw.get("gpu") == planned_gpu \
            else "mismatch"
    hosts = env.get("hostnames") or hw.get("hosts") or []
    nodes_m = hw.get("nodes") or len(hosts) or None
    rows = [
        claim_row(ctx, "total_gpus", 0.0),
        _row(ctx, "GPU type", planned_gpu, ran_gpu, gpu_verdict, "gpu_type"),
        _row(ctx, "nodes", cluster.get("nodes"), nodes_m,
             "match" if nodes_m == cluster.get("nodes") else "mismatch" if nodes_m else "not measured"),
        _row(ctx, "layout tp × pp × dp", f"{lay.tp} × {lay.pp} × {lay.dp}", f"{lay.tp} × {lay.pp} × {lay.dp}",
             "match"),
        _row(ctx, "backend", "nccl" if planned_gpu != "cpu" else "gloo", hw.get("backend") or "—",
             "match" if (hw.get("backend") == "nccl") == (planned_gpu != "cpu") else "CPU twin"),
    ]
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("harness_version", "git_sha", "python", "torch",
                                                        "transformers", "cuda", "nccl", "driver") if env.get(k))
    blocks = [Table(_header(ctx), rows),
              Text(f"Environment: {versions or 'not recorded'}; hosts: {', '.join(hosts) or '—'}"
                   + (f"; Slurm job {env['slurm_job_id']}" if env.get("slurm_job_id") else "")
                   + (f"; GPUs seen: {', '.join(env.get('gpu_names') or [])}" if env.get("gpu_names") else ""))]
    return Section("Hardware", blocks)


def memory(ctx: Ctx) -> Section:
    run = ctx.run
    hw = run.summary.get("hardware") or {}
    cpu = hw.get("gpu") == "cpu" or hw.get("backend") == "gloo"
    capacity = (ctx.run.summary.get("predicted") or {}).get("gpu", {}).get("memory_bytes")
    rows = [claim_row(ctx, "memory_per_gpu_gb", 0.02), claim_row(ctx, "model_memory_gb", 0.02),
            claim_row(ctx, "memory_balance_epsilon", 0.05), claim_row(ctx, "stage_memory_gb", 0.02)]
    per_stage = []
    for s in an.memory_by_stage(run.memory):
        peak = s["peak_bytes"]
        if cpu:
            verdict = "CPU twin: peak is the process RSS"
        elif capacity and peak is not None:
            verdict = "fits" if peak <= capacity else "over capacity"
        else:
            verdict = "not measured"
        per_stage.append([str(s["stage"]), fmt_bytes(s["predicted_bytes"]), fmt_bytes(s["param_bytes"]),
                          fmt_bytes(s["kv_bytes"]), fmt_bytes(peak), fmt_bytes(capacity), verdict])
    blocks = [Table(_header(ctx), rows)]
    blocks.append(Table(["stage", "predicted weights + KV (max rank)", "measured params", "measured KV",
                         "measured peak", "device capacity", "verdict"], per_stage) if per_stage
                  else Text("No memory table in this run.", "note"))
    blocks.append(Image(ctx.plots["memory"], "Memory per rank: predicted vs measured"))
    if cpu:
        blocks.append(Text("CPU twin: measured peak is each process's peak resident set (Python, libraries and "
                           "tensors), not GPU memory.", "note"))
    return Section("Memory", blocks)


def performance(ctx: Ctx) -> Section:
    run = ctx.run
    m = run.summary.get("metrics") or {}
    bounds = (run.summary.get("predicted") or {}).get("bounds") or {}
    slo_rows = []
    for r in run.summary.get("slo") or []:
        target = str(r.get("target"))
        pred = _slo_prediction(target, bounds)
        verdict = {True: "PASS", False: "FAIL", None: "UNMEASURED"}[r.get("passed")]
        margin = r.get("margin_pct")
        row = [target, pred, fmt(r.get("measured")), "—" if margin is None else f"{margin:+.1f} %"]
        if ctx.claims is not None:
            row.append("—")
        slo_rows.append(row + [verdict])
    hdr = ["SLO target", "predicted (planner bound)", "measured", "margin"]
    hdr += (["claimed", "verdict"] if ctx.claims is not None else ["verdict"])
    lat_rows = []
    for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2el"), ("queue", "queue")):
        lat_rows.append([name] + [fmt(m.get(f"{st}_{key}_ms")) for st in ("mean", "median", "p90", "p99")])
    rates = [claim_row(ctx, "throughput_rps", 1e9, "throughput (requests/s; predicted = upper bound)"),
             _row(ctx, "goodput (requests/s meeting every SLO)", None, m.get("request_goodput"), "measured only"),
             _row(ctx, "output tokens/s", None, m.get("output_throughput"), "measured only")]
    rates[0][-1] = _bound_verdict(ctx.predicted.get("throughput_rps"), m.get("request_throughput"))
    counts = (f"{m.get('completed', 0)} of {m.get('num_requests', 0)} requests completed "
              f"({m.get('failed', 0)} failed, {m.get('incomplete', 0)} unfinished) over {fmt(m.get('duration_s'))} s; "
              f"warm-up: {m.get('warmup_requests', 0)} requests in {fmt(run.summary.get('warmup_s'))} s, excluded.")
    return Section("Performance vs SLOs", [
        Text(f"Overall: {run.summary.get('verdict')}"), Text(counts),
        Table(hdr, slo_rows) if slo_rows else Text("No SLO targets in the spec: verdict UNMEASURED.", "note"),
        Table(_header(ctx), rates),
        Table(["latency (ms)", "mean", "median", "p90", "p99"], lat_rows),
        Image(ctx.plots["latency"], "TTFT / TPOT / E2E CDFs with the SLO targets"),
        Image(ctx.plots["throughput"], "Throughput over time")])


def _bound_verdict(bound: Any, measured: Any) -> str:
    if measured is None:
        return "not measured"
    if bound is None:
        return "measured only"
    return "within bound" if measured <= bound * 1.0001 else "above the bound (check the planner)"


def _slo_prediction(target: str, bounds: dict) -> str:
    t = target.replace(" ", "")
    if t.startswith("tpot") and bounds.get("tpot_at_rows_s") is not None:
        return f"≥ {bounds['tpot_at_rows_s'] * 1e3:.3g} ms"
    if t.startswith("ttft") and bounds.get("ttft_floor_s") is not None:
        return f"≥ {bounds['ttft_floor_s'] * 1e3:.3g} ms"
    if t.startswith("e2e") and bounds.get("e2e_floor_s") is not None:
        return f"≥ {bounds['e2e_floor_s'] * 1e3:.3g} ms"
    if t.startswith("throughput") and bounds.get("rps_bound") is not None:
        return f"≤ {bounds['rps_bound']:.3g} /s"
    return "—"


def load_balancing(ctx: Ctx) -> Section:
    run = ctx.run
    lay = run.layout()
    stats = an.stage_stats(run)
    imb = an.imbalance(stats)
    b_pred, b_meas = ctx.predicted.get("bubble_ratio"), (run.summary.get("measured") or {}).get("bubble_ratio")
    b_verdict = ("not measured" if b_meas is None else "measured only" if b_pred is None else
                 "agrees" if abs(b_meas - b_pred) <= 0.05 else f"differs ({b_meas - b_pred:+.2f})")
    rows = [_row(ctx, CLAIM_LABELS["bubble_ratio"] + " (predicted: (p−1)/(m+p−1))", b_pred, b_meas, b_verdict,
                 "bubble_ratio"),
            claim_row(ctx, "gpu_utilization_pct"),
            _row(ctx, "stage compute imbalance (max/mean)", 1.0, imb,
                 "not measured" if imb is None else "balanced" if imb <= 1.10 else "imbalanced")]
    st_rows = [[str(s["stage"]), str(lay.layer_split[int(s["stage"])]) if int(s["stage"]) < lay.pp else "?",
                fmt_s(s.get("compute_s")), fmt_s(s.get("wait_s")), fmt_s(s.get("send_s")),
                fmt(s.get("busy_fraction")), fmt(s.get("bubble_ratio"))] for s in stats]
    blocks = [Table(_header(ctx), rows)]
    blocks.append(Table(["stage", "layers", "compute", "wait", "send", "busy fraction", "bubble ratio"], st_rows)
                  if st_rows else Text("No stage timings in this run.", "note"))
    blocks.append(Image(ctx.plots["utilization"], "Utilisation and power over time"))
    if (run.summary.get("hardware") or {}).get("gpu") == "cpu":
        blocks.append(Text("CPU twin: no GPU utilisation exists; the plot shows the process's CPU % and RSS.",
                           "note"))
    return Section("Load balancing", blocks)


def tp_groups(ctx: Ctx) -> Section:
    run = ctx.run
    lay = run.layout()
    rows = [claim_row(ctx, "tp_allreduce_bytes_per_layer", 0.01)]
    g_rows = []
    for g in an.tp_groups(lay, run.comm, run.stages):
        g_rows.append([" ".join(map(str, g["ranks"])), str(g["dp"]), str(g["stage"]), g["layers"],
                       fmt(g["allreduce_per_step"]), fmt_bytes(g["bytes_per_op"]), fmt_bytes(g["allreduce_bytes"]),
                       fmt_s(g["allreduce_time_s"])])
    blocks = [Table(_header(ctx), rows),
              Table(["TP group ranks", "dp", "stage", "layers", "all-reduces per step per rank", "bytes per op",
                     "total bytes", "total time"], g_rows)]
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
        if a["group"] == "pp" and a["op"] == "send":
            s = lay.place(a["rank"]).stage
            send[s] = send.get(s, 0) + a["bytes"]
    pred_stages = {s["stage"]: s for s in (run.summary.get("predicted") or {}).get("stages") or []}
    rows = [claim_row(ctx, "pp_sendrecv_bytes_per_stage", 0.01)]
    s_rows = []
    for s in range(lay.pp):
        r = lay.layers_of_stage(s)
        holds = ", ".join((["embedding"] if s == 0 else []) + (["norm + lm_head"] if s == lay.pp - 1 else [])) or "—"
        ps, ms, st = pred_stages.get(s, {}), mem.get(s, {}), stats.get(s, {})
        pw, mw = ps.get("weight_bytes_per_rank"), ms.get("param_bytes")
        s_rows.append([str(s), f"{r.start}-{r.stop - 1} ({len(r)})", holds, fmt_bytes(pw), fmt_bytes(mw),
                       agreement(pw, mw, 0.01), fmt_s(st.get("compute_s")), fmt_s(st.get("wait_s")),
                       fmt_bytes(send.get(s))])
    return Section("PP stages", [
        Table(_header(ctx), rows),
        Table(["stage", "layers", "also holds", "predicted weights/rank", "measured params/rank", "verdict",
               "compute", "wait", "bytes sent"], s_rows),
        Image(ctx.plots["pipeline"], "Pipeline timeline: wait / compute / send per stage")])


def communication(ctx: Ctx) -> Section:
    run = ctx.run
    groups = an.comm_by(run.comm)
    wall = run.summary.get("wall_s")
    rows = [claim_row(ctx, "nvlink_utilization_pct")]
    if (run.summary.get("hardware") or {}).get("gpu") == "cpu":
        rows[0][-1] = "not available on this hardware (CPU twin)"
    c_rows = [[g["group"], g["op"], fmt(g["count"]), fmt_bytes(g["bytes"]), fmt_s(g["time_s"]),
               fmt(len(g["ranks"])), fmt(g["bytes"] / g["count"] if g["count"] else None)] for g in groups]
    blocks = [Table(_header(ctx), rows)]
    blocks.append(Table(["group", "op", "calls (all ranks)", "bytes", "time (sum over ranks)", "ranks",
                         "bytes per call"], c_rows) if c_rows else Text("No communication was recorded.", "note"))
    if wall:
        blocks.append(Text(f"Run wall time {fmt(wall)} s; times above are summed over every rank's ops."))
    if any(g["op"] == "send" for g in groups):
        blocks.append(Text("Sends are asynchronous (isend): a send's time runs from its post to the wait that "
                           "retires it, which the pipeline defers, so it is not transfer time. A recv's time "
                           "includes waiting for the previous stage.", "note"))
    blocks += [Image(ctx.plots["comm"], "Communication time and bytes per group"),
               Image(ctx.plots["nvlink"], "NVLink throughput")]
    return Section("Communication nodes", blocks)


def dag_section(ctx: Ctx) -> Section:
    dag = ctx.dag
    lay = dag.layout
    on_nodes = sum(n.bytes or 0 for n in dag.nodes if n.kind == "comm")
    heavy = sorted((n for n in dag.nodes if n.time_s and n.op != "send"), key=lambda n: -n.time_s)[:6]
    rows = [["nodes", str(node_count(lay)), str(len(dag.nodes)), "match" if len(dag.nodes) == node_count(lay)
             else "mismatch"],
            ["edges", "—", str(len(dag.edges)), "every edge joins two nodes"],
            ["comm bytes on nodes vs comm table", fmt_bytes(dag.comm_table_bytes), fmt_bytes(on_nodes),
             "match" if on_nodes == dag.comm_table_bytes else
             f"differs: {fmt_bytes(dag.comm_table_bytes - on_nodes)} in ops with no DAG node"]]
    blocks = [Text("The graph that ran: per-rank compute blocks (embedding, each layer's attention and MLP, "
                   "final norm + lm_head) and communication ops (TP all-reduce / all-gather / broadcast, PP "
                   "send/recv, tokens back to stage 0); edges are data dependencies. Files: "
                   + ", ".join(ctx.dag_files) + " (render the DOT with `dot -Tsvg dag.dot`)."),
              Table(["check", "formula / table", "DAG", "verdict"], rows)]
    if heavy:
        blocks.append(Table(["most time-consuming nodes (async sends left out)", "rank", "stage", "time", "bytes", "time source"],
                            [[n.id, str(n.rank), str(n.stage), fmt_s(n.time_s), fmt_bytes(n.bytes), n.time_source or ""]
                             for n in heavy]))
    if dag.unmatched:
        blocks.append(Text("Traffic with no DAG node: " + "; ".join(
            f"rank {u['rank']} {u['kind']}: {fmt_bytes(u['bytes'])}" for u in dag.unmatched[:8]), "note"))
    return Section("DAG", blocks)


def nodes_to_modify(ctx: Ctx) -> Section:
    adv = ctx.advice
    blocks = []
    if adv.changes:
        blocks.append(Table(["nodes", "change", "predicted effect", "evidence"],
                            [[c.nodes, c.change, c.effect, c.evidence] for c in adv.changes]))
    elif adv.none_needed:
        blocks.append(Text("None needed: every rule was judged on measurements and none fired "
                           f"({', '.join(adv.checked)})."))
    else:
        blocks.append(Text("No change found, but not every rule could be judged.", "note"))
    if adv.unjudged:
        blocks.append(Text("Not judged (measurements missing): " + ", ".join(adv.unjudged), "note"))
    if not ctx.run.complete:
        blocks.append(Text("The run is incomplete: these findings rest on partial measurements.", "note"))
    hw = ctx.run.summary.get("hardware") or {}
    if adv.changes and (hw.get("gpu") == "cpu" or hw.get("backend") == "gloo"):
        blocks.append(Text("CPU twin: the time-based findings measure gloo ranks sharing a few CPU cores (a "
                           "collective waits for its peer process to be scheduled); they show the method, not "
                           "what the GPU deployment needs. Re-run on the target GPUs before changing it.", "note"))
    return Section("Nodes to modify", blocks)


def claims(ctx: Ctx) -> Section | None:
    if ctx.claims is None:
        return None
    rows = [[str(c.get("id")) + ("" if c.get("index") is None else f"[{c['index']}]"),
             str(c.get("text", ""))[:120], fmt(c.get("claimed")), fmt(c.get("expected")),
             str(c.get("verdict")), str(c.get("source", "")), str(c.get("reason", ""))] for c in ctx.claims]
    counts = {}
    for c in ctx.claims:
        key = (c.get("verdict"), c.get("source"))
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(f"{n} {v} ({s})" for (v, s), n in sorted(counts.items(), key=lambda x: str(x[0])))
    blocks = [Text(f"{len(ctx.claims)} claims from {ctx.claims_source}: {tally or 'none found'}. "
                   "'source' says whether a verdict comes from this run's measurement, the planner's "
                   "prediction, or the report's own statements."),
              Table(["id", "claim", "claimed", "expected / measured", "verdict", "source", "reason"], rows)]
    if ctx.claim_notes:
        blocks.append(Bullets(list(ctx.claim_notes)))
    return Section("Claims", blocks)


def cross_checks(ctx: Ctx) -> Section:
    run = ctx.run
    checks = run.summary.get("cross_checks") or []
    rows = [[str(c.get("name")), fmt(c.get("expected")) if not isinstance(c.get("expected"), dict) else
             ", ".join(f"{k} {fmt(v)}" for k, v in c["expected"].items()),
             fmt(c.get("measured")) if not isinstance(c.get("measured"), dict) else
             ", ".join(f"{k} {fmt(v)}" for k, v in c["measured"].items()),
             "ok" if c.get("ok") else "mismatch", str(c.get("detail") or "")] for c in checks]
    bad = sum(1 for c in checks if not c.get("ok"))
    blocks = [Text(f"{len(checks)} checks, {bad} failed.")] if checks else [Text("No cross-checks recorded.", "note")]
    if rows:
        blocks.append(Table(["check", "expected", "measured", "verdict", "detail"], rows))
    notes = run.summary.get("notes") or []
    if notes:
        blocks.append(Bullets([str(n) for n in notes]))
    return Section("Cross-checks and notes", blocks)


def build_sections(ctx: Ctx) -> list[Section]:
    out = [hardware(ctx), memory(ctx), performance(ctx), load_balancing(ctx), tp_groups(ctx), pp_stages(ctx),
           communication(ctx), dag_section(ctx), nodes_to_modify(ctx)]
    c = claims(ctx)
    if c is not None:
        out.append(c)
    out.append(cross_checks(ctx))
    return out


def intro(ctx: Ctx) -> list:
    s = ctx.run.summary
    hw = s.get("hardware") or {}
    lay = s.get("layout") or {}
    lines = [Text(f"Verdict: {s.get('verdict')}" + ("" if s.get("complete") else
                  f" (the run did not finish: {s.get('incomplete_reason')})")),
             Text(f"Run {s.get('name')} · started {s.get('started_utc')} · finished {s.get('finished_utc') or '—'} · "
                  f"wall {fmt(s.get('wall_s'))} s · {hw.get('total_gpus')} × {hw.get('gpu_name') or hw.get('gpu')} "
                  f"({hw.get('backend')}) · tp {lay.get('tp')} pp {lay.get('pp')} dp {lay.get('dp')} "
                  f"split {lay.get('layer_split')}"),
             Text(f"Run directory: {ctx.run.path}")]
    if not s.get("complete"):
        lines.append(Text("This run did not finish: every number below covers only what completed.", "note"))
    return lines
