"""``harness plan CONFIG [--json] [--set a.b=c ...] [--search] [--check-weights]``: the planner's
numbers, no GPU needed; ``--check-weights`` counts every rank's weight bytes again with accelerate
(exit 1 when they differ from the planner's).

Rendering only; the numbers come from harness.plan.planner and harness.plan.search (formulas in
docs/formulas.md). Tables are plain text under 100 columns."""

from __future__ import annotations

import argparse
import json

from harness.plan.planner import Plan, plan
from harness.plan.search import SearchResult, search
from harness.spec.inputs import check_inputs
from harness.spec.spec import load_spec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML (e.g. configs/llama3-70b-tp2-pp4-h100.yaml)")
    p.add_argument("--json", action="store_true", help="print the same data as JSON")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD.PATH=VALUE",
        help="override a spec field, e.g. --set parallel.tp=4 (repeatable)",
    )
    p.add_argument(
        "--search",
        action="store_true",
        help="rank every (tp, pp, dp) layout of the cluster by capacity under the SLOs",
    )
    p.add_argument(
        "--check-weights",
        action="store_true",
        help="cross-check every stage's weight bytes with accelerate's module-size accounting of "
        "the stage built on the meta device (imports torch: a few seconds more)",
    )


def main(args: argparse.Namespace) -> int:
    spec = load_spec(args.config, args.overrides)
    # the trace and checkpoint, as `harness run` checks them: plan refuses what run refuses
    check_inputs(spec)
    if args.search:
        res = search(spec)
        print(json.dumps(res.to_dict(), indent=1) if args.json else render_search(spec, res))
        return 0
    pl = plan(spec)
    checks = None
    if args.check_weights:  # torch and accelerate only when asked: the plan itself needs neither
        from harness.engines.reference.model.accounting import weight_cross_check

        checks = weight_cross_check(spec, pl)
    data = {**pl.to_dict(), "weight_cross_check": checks} if checks is not None else pl.to_dict()
    print(json.dumps(data, indent=1) if args.json else render_plan(pl, checks))
    return 0 if not checks or all(c["ok"] for c in checks) else 1


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def _size(b: float) -> str:
    """Bytes with a decimal unit (GB = 1e9 B), so the CPU twin's kilobytes do not print as 0.00
    GB."""
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= f:
            return f"{b / f:.2f} {unit}"
    return f"{b:.0f} B"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def _table(
    head: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,), sep: str = "  "
) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def fmt(r: list[str]) -> str:
        return sep.join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()

    return [fmt(head)] + [fmt(r) for r in rows]


def _wrap(first: str, text: str, width: int = 99, indent: int = 17) -> list[str]:
    """``first`` then ``text`` broken at '; ' so that no line passes ``width`` columns."""
    out, line = [], first
    for part in text.split("; "):
        piece = part if line == first else "; " + part
        if len(line) + len(piece) > width and line != first:
            out.append(line + ";")
            line = " " * indent + part
        else:
            line += piece
    return out + [line]


def render_weight_check(checks: list[dict]) -> list[str]:
    """The independent count of weight bytes (accelerate, meta-device stages) against the
    planner's."""
    bad = [c for c in checks if not c["ok"]]
    head = (
        f"weights cross-check (accelerate compute_module_sizes, meta-device stages): "
        f"{f'differs on {len(bad)}' if bad else f'= planner on {len(checks)}'}/{len(checks)} ranks"
    )
    return [head] + [
        f"  MISMATCH {c['name']}: planner {c['expected']:,} B, accelerate {c['measured']:,} B"
        for c in bad
    ]


def render_plan(pl: Plan, checks: list[dict] | None = None) -> str:
    lay, run, b = pl.layout, pl.run, pl.bounds
    out = [
        f"plan {pl.name}: {pl.model['name']} {pl.dtype}, TP{lay['tp']}-PP{lay['pp']}-DP{lay['dp']} "
        f"on "
        f"{pl.cluster['nodes']}x{pl.cluster['gpus_per_node']} {pl.gpu['name']} "
        f"({_gb(pl.gpu['memory_bytes'])} GB each)",
        f"parameters {pl.params_total:,} = {_size(pl.params_total * pl.dtype_bytes)} in "
        f"{pl.dtype}; "
        f"one replica holds {_size(pl.model_weight_bytes)}",
        "",
        "Memory per GPU (GB = 1e9 B; every TP rank and replica of a stage alike)",
        f"work: activations of a {run['forward_tokens']}-token forward over {run['max_batch']} "
        f"rows "
        f"(+ logits; token budget {run['max_num_batched_tokens']})",
        f"KV: {run['kv_cache_fraction']:g} of the rest; slot {run['slot_tokens']} tokens",
    ]
    rows = []
    for st in pl.stages:
        r = pl.ranks[st.ranks[0]]
        holds = "+".join(h.replace("final_norm", "norm") for h in st.holds) or "-"
        rows.append(
            [
                str(st.stage),
                f"{st.first_layer}-{st.last_layer}",
                holds,
                _size(r.weight_bytes),
                _size(r.workspace_bytes),
                f"{r.kv_bytes_per_token:,}",
                _size(r.kv_budget_bytes),
                f"{st.kv_token_capacity:,}",
                _size(r.headroom_bytes),
                "yes" if all(pl.ranks[k].fits for k in st.ranks) else "NO",
            ]
        )
    out += _table(
        [
            "stage",
            "layers",
            "holds",
            "weights",
            "work",
            "KV B/tok",
            "KV",
            "KV tokens",
            "free",
            "fits",
        ],
        rows,
        left=(0, 1, 2),
        sep=" ",
    )
    out.append(
        f"balance: weights eps = {pl.weight_epsilon:.4f}, total eps = {pl.total_epsilon:.4f} "
        f"(max/mean - 1 over ranks)"
    )
    out += render_weight_check(checks) if checks else []
    c = pl.comm
    out += ["", "Communication per token"]
    if c.tp_allreduces_per_layer:
        out.append(
            f"TP all-reduce: {c.tp_allreduces_per_layer} per layer, "
            f"{c.tp_allreduce_bytes_per_layer_per_token:,} B per layer per token; "
            f"ring factor 2(n-1)/n = {c.tp_ring_factor:.2f}"
        )
    if c.pp_boundaries:
        out.append(
            f"PP send/recv: {c.pp_bytes_per_token_per_boundary:,} B per token per boundary "
            f"({c.pp_boundaries} boundaries); step header {c.header_bytes} B"
        )
    rows = [
        [
            str(st.stage),
            str(st.tp_allreduces_per_forward),
            f"{st.tp_allreduce_bytes_per_token:,}",
            st.tp_link,
            f"{st.tp_time_per_token_s * 1e6:.3f}",
            st.pp_link or "-",
            "-" if st.pp_time_per_token_s is None else f"{st.pp_time_per_token_s * 1e6:.3f}",
        ]
        for st in pl.stages
    ]
    out += _table(
        ["stage", "ARs/fwd", "TP B/tok", "TP link", "TP us/tok", "PP hop", "PP us/tok"],
        rows,
        left=(0, 3, 5),
    )
    out += [
        "",
        f"Time floors (decode: {b.decode_rows} rows x 1 token at context {b.decode_context:.0f}; "
        f"prefill: one {b.input_mean:.0f}-token prompt)",
    ]
    rows = [
        [str(s), _ms(b.decode_step_s[s]), f"{b.prefill_per_token_s[s] * 1e6:.2f}"]
        for s in range(lay["pp"])
    ]
    out += _table(["stage", "decode step ms", "prefill us/token"], rows)
    out += [
        "",
        f"Bounds (mean input {b.input_mean:.0f}, output {b.output_mean:.0f} tokens; "
        f"m = {b.micro_batches} micro-batches in flight)",
        f"bubble (p-1)/(m+p-1) = {b.bubble_ratio:.3f}",
        f"TPOT >= {_ms(b.tpot_floor_s)} ms alone; {_ms(b.tpot_at_rows_s)} ms at {b.decode_rows} "
        f"rows "
        f"per micro-batch (KV allows {b.kv_rows_limit})",
        f"TTFT >= {_ms(b.ttft_floor_s)} ms (prompt in {b.prefill_chunks} chunk(s) of <= "
        f"{b.prefill_chunk}); E2E >= "
        + (f"{b.e2e_floor_s:.2f} s" if b.e2e_floor_s >= 1 else f"{_ms(b.e2e_floor_s)} ms"),
        f"RPS <= {b.rps_bound:.2f}" + (f" (offered {b.offered_rps:g})" if b.offered_rps else ""),
    ]
    if b.rps_slo is not None:
        out.append(
            f"RPS meeting the SLOs <= {b.rps_slo:.2f}"
            + (f" at {b.slo_rows} rows per micro-batch" if b.slo_rows else "")
        )
    out.append("")
    if pl.problems:
        for p in pl.problems:
            out += _wrap("problem: ", p, indent=9)
    else:
        out.append("fits in memory; every SLO target is within the bounds (bounds, not a promise)")
    return "\n".join(out)


def render_search(spec, res: SearchResult) -> str:
    c = spec.cluster
    out = [
        f"search: {res.gpus} GPUs ({c.nodes} nodes x {c.gpus_per_node} {spec.gpu.name}), "
        f"{spec.shape.name} {spec.model.dtype}",
        "ranked by the planner's bound on RPS meeting the SLOs",
    ]
    ok = [x for x in res.candidates if x.accepted]
    rows = [
        [
            str(i + 1),
            x.name + (" *" if x.is_spec_layout else ""),
            f"{x.max_weight_gb:.1f}",
            f"{x.tpot_floor_ms:.1f}",
            f"{x.ttft_floor_ms:.1f}",
            f"{x.rps_bound:.2f}",
            f"{x.capacity_rps:.2f}",
        ]
        for i, x in enumerate(ok)
    ]
    if rows:
        out += _table(
            ["#", "layout", "weights GB", "TPOT ms", "TTFT ms", "RPS bound", "RPS at SLO"], rows
        )
    else:
        out.append("no layout meets the memory and SLO constraints")
    bad = [x for x in res.candidates if not x.accepted]
    if bad:
        out += ["", "rejected:"]
        for x in bad:
            out += _wrap(
                f"{x.name + (' *' if x.is_spec_layout else ''):<16} ", "; ".join(x.reasons)
            )
    out.append("(* the spec's own layout)")
    return "\n".join(out)
