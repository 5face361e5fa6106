"""Claim -> verdict: CONFIRMED, REFUTED (with the right value, the ratio and a unit-slip note) or
UNVERIFIED (needs a measurement, or the report leaves the workload unstated).

Expected values come from the planner (``source: predicted``), from a run's summary.json
(``measured``, with ``--results``), or only from the report itself (``stated``). Tolerance
(docs/claims.md): |claimed − expected| <= max(rel·|expected|, half a unit of the claim's last
stated digit), rel = 2 % for memory, bytes and counts, 5 % for run-time rates and
utilisations; ε has an absolute tolerance of 0.005. GB = 1e9 bytes. Memory claims are read as
weights: the KV cache comes on top of them and is planned separately.

The spec and run context live in ``harness.verdicts.claims.context``, the tolerance rule and unit
slips in ``harness.verdicts.claims.tolerance``; this module holds the checks, one per claim id.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness.plan.planner import Plan, plan
from harness.verdicts.claims.checks_runtime import RuntimeChecks
from harness.verdicts.claims.checks_static import StaticChecks
from harness.verdicts.claims.context import RunResults, context_spec, load_results, run_mismatch
from harness.verdicts.claims.parse import Claim, ClaimsDoc
from harness.verdicts.claims.tolerance import REL_STATIC, Verdict, compare_claim
from harness.verdicts.claims.tolerance import Alt as _Alt
from harness.verdicts.claims.units import Reading, readings

RUNTIME = {
    "throughput_rps",
    "gpu_utilization_pct",
    "nvlink_utilization_pct",
    "bubble_ratio",
    "slo_margin_pct",
    "latency_slos_met",
}
HARDWARE_DEPENDENT = RUNTIME | {
    "total_gpus",
    "gpu_memory_gb",
    "memory_utilization_pct",
    "gpu_allocation_pct",
}
MODEL_DEPENDENT = {
    "model_memory_gb",
    "memory_per_gpu_gb",
    "memory_balance_epsilon",
    "stage_memory_gb",
    "tp_allreduce_bytes_per_layer",
    "pp_sendrecv_bytes_per_stage",
} | RUNTIME
LAYOUT_DEPENDENT = {"memory_per_gpu_gb", "memory_balance_epsilon", "stage_memory_gb"} | RUNTIME
# Measured only from an engine's trace: the tables each needs (comm: bytes per op; stages: idle
# time); an engine whose registry entry does not produce them cannot state the claim.
NEEDS_TRACE = {
    "tp_allreduce_bytes_per_layer": ("comm",),
    "pp_sendrecv_bytes_per_stage": ("comm",),
    "bubble_ratio": ("stages",),
}


@dataclass
class Report:
    claims: list[Verdict]
    model: dict
    layout: dict
    hardware: dict
    workload_stated: bool
    results: str | None
    notes: list[str]

    def to_dict(self) -> dict:
        return {
            "claims": [asdict(v) for v in self.claims],
            "model": self.model,
            "layout": self.layout,
            "hardware": self.hardware,
            "workload_stated": self.workload_stated,
            "results": self.results,
            "notes": self.notes,
        }

    @property
    def refuted(self) -> bool:
        return any(v.verdict == "REFUTED" for v in self.claims)


class Checker(RuntimeChecks, StaticChecks):
    """Holds what every check needs: the spec, its plan, the report and the run (if any)."""

    def __init__(
        self, doc: ClaimsDoc, spec, pl: Plan, workload_stated: bool, res: RunResults | None
    ):
        self.doc, self.spec, self.plan, self.stated, self.res = doc, spec, pl, workload_stated, res
        self.why_not = run_mismatch(res, spec) if res else {}
        lay = spec.layout
        self.strategy = f"TP{lay.tp}-PP{lay.pp}-DP{lay.dp}"

    # -- measured values
    def measured(self, c: Claim) -> tuple[Any, str | None]:
        """(value, None) when the run measured it and may stand for the claim; (None, why) else."""
        if self.res is None:
            return None, None
        w = self.why_not
        if c.id in HARDWARE_DEPENDENT and w.get("hardware"):
            return None, w["hardware"]
        if c.id in MODEL_DEPENDENT and w.get("model"):
            return None, w["model"]
        if c.id in LAYOUT_DEPENDENT and w.get("layout"):
            return None, w["layout"]
        if c.id in RUNTIME and w.get("complete"):
            return None, w["complete"]
        v = self.res.measured.get(c.id)
        if c.index is not None and isinstance(v, list):
            v = v[c.index] if c.index < len(v) else None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None, "the run did not measure it"
        return v, None

    def _run_note(self, why: str | None) -> str:
        return f" (run not used: {why})" if why and self.res else ""

    # -- comparison with tolerance, ratio and slips
    def compare(
        self,
        c: Claim,
        expected: float,
        reason: str,
        source: str,
        rel: float = REL_STATIC,
        abs_tol: float | None = None,
        alts: tuple[_Alt, ...] = (),
        tp_slip: bool = False,
        binary: bool = False,
        reads: tuple[Reading, ...] | None = None,
    ) -> Verdict:
        """``reads``: the readings to try; default, those of the claim's own unit (GB: 10^9 B or
        GiB)."""
        return compare_claim(
            c,
            expected,
            reason,
            source,
            self.spec.layout.tp,
            rel,
            abs_tol,
            alts,
            tp_slip,
            binary,
            reads or readings(c.unit),
        )

    def unverified(
        self, c: Claim, reason: str, source: str = "stated", expected: Any = None
    ) -> Verdict:
        return Verdict(c.id, c.index, c.text, c.claimed, expected, "UNVERIFIED", reason, source)

    def check(self, c: Claim) -> Verdict:
        if self.res is not None and c.id in NEEDS_TRACE and not _traces(self.res.engine, c.id):
            return self.unverified(
                c,
                f"not traced (external engine: {self.res.engine}): the claim needs the run's "
                f"comm/stage trace, which the reference engine and vLLM launched by the harness "
                f"(run.instrument timing) record; run the same spec with one of them",
                "measured",
            )
        return getattr(self, f"_{c.id}")(c)


def verify(doc: ClaimsDoc, config: str | None = None, results: str | None = None) -> Report:
    spec, notes, stated = context_spec(doc, config)
    res = load_results(results) if results else None
    pl = plan(spec)
    ck = Checker(doc, spec, pl, stated, res)
    verdicts = [ck.check(c) for c in doc.claims]
    if res is not None:
        notes += [
            f"run not usable for {k}-dependent claims: {v}" for k, v in ck.why_not.items() if v
        ]
    lay = spec.layout
    return Report(
        verdicts,
        {"name": spec.shape.name, "dtype": spec.model.dtype, "params": pl.params_total},
        {
            "tp": lay.tp,
            "pp": lay.pp,
            "dp": lay.dp,
            "layer_split": list(lay.layer_split),
            "micro_batches": spec.run.micro_batches,
        },
        {
            "gpu": spec.gpu.name,
            "nodes": spec.cluster.nodes,
            "gpus_per_node": spec.cluster.gpus_per_node,
        },
        stated,
        results,
        notes,
    )


def _traces(kind: str, claim_id: str) -> bool:
    """The engine of ``kind`` produces the tables ``claim_id`` is measured from."""
    from harness.engines.registry import ENGINES

    entry = ENGINES.get(kind)
    return entry is not None and set(NEEDS_TRACE[claim_id]) <= set(entry.tables)
