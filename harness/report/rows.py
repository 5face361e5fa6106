"""Check rows of the report: predicted (the planner) · measured (this run) · [claimed] · verdict.

The run context every section reads (``Ctx``), value formatting, the agreement rule and the
planner's plan keyed by claim id. Predicted vs measured "agrees" when
|measured − predicted| ≤ tolerance·|predicted| (TOL, or the row's own), else "differs (+x %)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.report.dag import Dag
from harness.report.modify import Advice

TOL = 0.10

CLAIM_LABELS = {
    "total_gpus": "GPUs used",
    "memory_per_gpu_gb": "weights per GPU (GB, max rank)",
    "model_memory_gb": "model weights (GB, one replica)",
    "memory_balance_epsilon": "memory balance ε (max/mean − 1)",
    "stage_memory_gb": "weights per stage (GB)",
    "throughput_rps": "throughput (requests/s)",
    "gpu_utilization_pct": "GPU utilisation (%)",
    "bubble_ratio": "pipeline bubble ratio",
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


def check_header(ctx: Ctx) -> list[str]:
    h = ["quantity", "predicted", "measured"]
    return h + (["claimed", "verdict"] if ctx.claims is not None else ["verdict"])


def check_row(
    ctx: Ctx, label: str, predicted: Any, measured: Any, verdict: str, cid: str | None = None, f=fmt
) -> list[str]:
    row = [
        label,
        f(predicted) if not isinstance(predicted, str) else predicted,
        f(measured) if not isinstance(measured, str) else measured,
    ]
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
    return check_row(ctx, label or CLAIM_LABELS.get(cid, cid), p, m, agreement(p, m, tol), cid)


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
        flat.setdefault(
            "tp_allreduce_bytes_per_layer", comm.get("tp_allreduce_bytes_per_layer_per_token")
        )
        flat.setdefault("pp_sendrecv_bytes_per_stage", comm.get("pp_bytes_per_token_per_boundary"))
    if bounds:
        flat.setdefault("bubble_ratio", bounds.get("bubble_ratio"))
        flat.setdefault("throughput_rps", bounds.get("rps_bound"))
    if ranks or stages:
        flat.setdefault("total_gpus", layout.world_size)
    return flat
