"""Claim -> verdict: CONFIRMED, REFUTED (with the right value, the ratio and a unit-slip note) or
UNVERIFIED (needs a measurement, or the report leaves the workload unstated).

Expected values come from the planner (``source: predicted``), from a run's summary.json
(``measured``, with ``--results``), or only from the report itself (``stated``). Tolerance
(docs/claims.md): |claimed − expected| <= max(rel·|expected|, half a unit of the claim's last
stated digit), rel = 2 % for memory, bytes and counts, 5 % for run-time rates and
utilisations; ε has an absolute tolerance of 0.005. GB = 1e9 bytes. Memory claims are read as
weights: the KV cache comes on top of them and is planned separately.

The spec and run context live in ``harness.verdicts.claims.context``, the tolerance rule and unit slips in
``harness.verdicts.claims.tolerance``; this module holds the checks, one per claim id.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from harness.plan.planner import Plan, plan
from harness.verdicts.claims.context import RunResults, context_spec, load_results, run_mismatch
from harness.verdicts.claims.parse import Claim, ClaimsDoc
from harness.verdicts.claims.tolerance import EPS_ABS, REL_RUNTIME, REL_STATIC, Verdict, compare_claim
from harness.verdicts.claims.tolerance import Alt as _Alt
from harness.verdicts.claims.tolerance import fmt as _fmt
from harness.verdicts.claims.units import Reading, capacity_readings, readings

RUNTIME = {"throughput_rps", "gpu_utilization_pct", "nvlink_utilization_pct", "bubble_ratio",
           "slo_margin_pct", "latency_slos_met"}
HARDWARE_DEPENDENT = RUNTIME | {"total_gpus", "gpu_memory_gb", "memory_utilization_pct", "gpu_allocation_pct"}
MODEL_DEPENDENT = {"model_memory_gb", "memory_per_gpu_gb", "memory_balance_epsilon", "stage_memory_gb",
                   "tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage"} | RUNTIME
LAYOUT_DEPENDENT = {"memory_per_gpu_gb", "memory_balance_epsilon", "stage_memory_gb"} | RUNTIME
# Measured only from the reference engine's trace (comm table: bytes per op; stages table: idle time).
NEEDS_TRACE = {"tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage", "bubble_ratio"}


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
        return {"claims": [asdict(v) for v in self.claims], "model": self.model, "layout": self.layout,
                "hardware": self.hardware, "workload_stated": self.workload_stated, "results": self.results,
                "notes": self.notes}

    @property
    def refuted(self) -> bool:
        return any(v.verdict == "REFUTED" for v in self.claims)


class Checker:
    """Holds what every check needs: the spec, its plan, the report and the run (if any)."""

    def __init__(self, doc: ClaimsDoc, spec, pl: Plan, workload_stated: bool, res: RunResults | None):
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
    def compare(self, c: Claim, expected: float, reason: str, source: str, rel: float = REL_STATIC,
                abs_tol: float | None = None, alts: tuple[_Alt, ...] = (), tp_slip: bool = False,
                binary: bool = False, reads: tuple[Reading, ...] | None = None) -> Verdict:
        """``reads``: the readings to try; default, those of the claim's own unit (GB: 10^9 B or GiB)."""
        return compare_claim(c, expected, reason, source, self.spec.layout.tp, rel, abs_tol, alts, tp_slip, binary,
                             reads or readings(c.unit))

    def unverified(self, c: Claim, reason: str, source: str = "stated", expected: Any = None) -> Verdict:
        return Verdict(c.id, c.index, c.text, c.claimed, expected, "UNVERIFIED", reason, source)

    def check(self, c: Claim) -> Verdict:
        if self.res is not None and self.res.engine != "reference" and c.id in NEEDS_TRACE:
            return self.unverified(c, f"not traced (external engine: {self.res.engine}): the claim needs the run's "
                                      f"comm/stage trace, which only the reference engine records; run the same "
                                      f"spec with engine.kind reference to measure it", "measured")
        return getattr(self, f"_{c.id}")(c)

    # -- hardware and counts
    def _total_gpus(self, c: Claim) -> Verdict:
        lay = self.spec.layout
        return self.compare(c, lay.world_size, f"{self.strategy} uses TP{lay.tp} x PP{lay.pp} x DP{lay.dp} = "
                            f"{lay.world_size} GPUs", "predicted")

    def _gpu_memory_gb(self, c: Claim) -> Verdict:
        g = self.spec.gpu
        reason = f"{g.name} has {g.memory_gib:g} GiB usable = {g.memory_bytes / 1e9:.1f} GB"
        return self.compare(c, g.memory_bytes / 1e9, reason, "predicted")

    def _gpu_allocation_pct(self, c: Claim) -> Verdict:
        avail = self.doc.total_gpus or self.spec.cluster.nodes * self.spec.cluster.gpus_per_node
        world = self.spec.layout.world_size
        return self.compare(c, 100.0 * world / avail, f"{world} of {avail} available GPUs used", "stated")

    # -- memory (weights)
    def _weights(self) -> tuple[int, int, list[int]]:
        ws = [r.weight_bytes for r in self.plan.ranks]
        return max(ws), min(ws), ws

    def _model_memory_gb(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        pl = self.plan
        if v is not None:
            return self.compare(c, float(v), "weights of one replica measured by the run", "measured", binary=True)
        exp = pl.params_total * pl.dtype_bytes / 1e9
        reason = (f"{pl.params_total:,} parameters x {pl.dtype_bytes} B ({pl.dtype}) = {exp:.2f} GB of weights; "
                  f"the KV cache comes on top" + self._run_note(why))
        alts = (_Alt(pl.params_total * pl.dtype_bytes / 1e9 * self.spec.layout.dp, None,
                     "= the weights of all DP replicas together"),) if self.spec.layout.dp > 1 else ()
        return self.compare(c, exp, reason, "predicted", alts=alts, binary=True)

    def _no_tp_alts(self) -> tuple[_Alt, ...]:
        pl, lay = self.plan, self.spec.layout
        if lay.tp == 1:
            return ()
        return (_Alt(pl.params_total * pl.dtype_bytes / lay.pp / 1e9, "÷tp",
                     "= model weights / pp: TP sharding ignored (÷tp missing)"),
                _Alt(max(s.weight_bytes for s in pl.stages) / 1e9, "÷tp",
                     "= a whole stage's weights on one GPU: TP sharding ignored (÷tp missing)"))

    def _memory_per_gpu_gb(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), "max over ranks of the weight bytes measured by the run", "measured",
                                alts=self._no_tp_alts(), tp_slip=True, binary=True)
        hi, lo, _ = self._weights()
        st = self.plan.stages
        where = " and ".join(str(s.stage) for s in st if s.weight_bytes_per_rank >= 0.999 * hi)
        reason = (f"weights per GPU are {lo / 1e9:.2f} to {hi / 1e9:.2f} GB (the most on stage {where}); "
                  f"weights only, the KV cache comes on top" + self._run_note(why))
        return self.compare(c, hi / 1e9, reason, "predicted", alts=self._no_tp_alts(), tp_slip=True, binary=True)

    def _capacities(self, c: Claim) -> list[tuple[str, float]]:
        """What a memory percentage may be "of": the GPU's usable memory (the catalogue), then the capacity
        the claim's line states, else the one the report states (its hardware line), else the GPU's
        nominal size; each stated one under every reading of its unit."""
        g = self.spec.gpu
        out = [(f"{g.name}'s {g.memory_gib:g} GiB usable", float(g.memory_bytes))]
        if c.context.get("capacity"):
            return out + capacity_readings(*c.context["capacity"], "the line's")
        hw = next((x for x in self.doc.claims if x.id == "gpu_memory_gb"), None)
        if hw is not None:
            return out + capacity_readings(hw.claimed, hw.unit, "the report's")
        nominal = re.search(r"(\d+)GB$", g.name)
        return out + (capacity_readings(float(nominal.group(1)), "GB", f"{g.name}'s nominal") if nominal else [])

    def _memory_utilization_pct(self, c: Claim) -> Verdict:
        hi, _, _ = self._weights()
        caps = self._capacities(c)
        reason = f"weights {hi / 1e9:.2f} GB on the fullest GPU / its memory; the KV cache may use the rest"
        own = c.context
        if own.get("memory_per_gpu_gb") and own.get("capacity"):
            reason += (f"; the claim is the report's own {_fmt(own['memory_per_gpu_gb'])} GB / "
                       f"{_fmt(own['capacity'][0])} GB")
        reads = tuple(Reading(f"% of {label}", 1.0, 100.0 * hi / cap) for label, cap in caps)
        return self.compare(c, 100.0 * hi / caps[0][1], reason, "predicted", tp_slip=True, reads=reads)

    def _memory_balance_epsilon(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), "max/mean − 1 of the per-rank weight bytes the run built", "measured",
                                abs_tol=EPS_ABS)
        hi, _, ws = self._weights()
        mean = sum(ws) / len(ws)
        extra = "; ".join(f"stage {s.stage} holds the {' and '.join(s.holds)}" for s in self.plan.stages if s.holds)
        reason = (f"ε = max/mean − 1 of per-GPU weights = {hi / 1e9:.2f} / {mean / 1e9:.2f} GB − 1"
                  + (f" ({extra})" if extra else "") + self._run_note(why))
        return self.compare(c, self.plan.weight_epsilon, reason, "predicted", abs_tol=EPS_ABS)

    def _stage_memory_gb(self, c: Claim) -> Verdict:
        st = self.plan.stages
        if c.index >= len(st):
            return Verdict(c.id, c.index, c.text, c.claimed, None, "REFUTED",
                           f"{self.strategy} has no stage {c.index} (pp={len(st)})", "predicted")
        v, why = self.measured(c)
        s = st[c.index]
        alts = (_Alt(self.plan.params_total * self.plan.dtype_bytes / len(st) / 1e9, None,
                     "= model weights / pp: the embedding (stage 0) and lm_head (last stage) not placed"),)
        if len(s.ranks) > 1:
            alts += (_Alt(s.weight_bytes_per_rank / 1e9, "xtp",
                          f"= one GPU's weights: the stage's {len(s.ranks)} TP ranks not added up"),)
        if v is not None:
            return self.compare(c, float(v), f"weights of stage {c.index}'s ranks measured by the run", "measured",
                                alts=alts, binary=True)
        reason = (f"stage {c.index} weights over its {len(s.ranks)} TP rank(s): {s.layers} layers"
                  + (f" + {' + '.join(s.holds)}" if s.holds else "")
                  + f" = {s.weight_bytes / 1e9:.2f} GB ({s.weight_bytes_per_rank / 1e9:.2f} GB per GPU)"
                  + self._run_note(why))
        return self.compare(c, s.weight_bytes / 1e9, reason, "predicted", alts=alts, binary=True)

    # -- layout
    def _stage_layers(self, c: Claim) -> Verdict:
        lay = self.spec.layout
        if c.index >= lay.pp:
            return Verdict(c.id, c.index, c.text, c.claimed, None, "REFUTED",
                           f"{self.strategy} has no stage {c.index} (pp={lay.pp})", "predicted")
        r = lay.layers_of_stage(c.index)
        reason = f"stage {c.index} holds layers {r.start}-{r.stop - 1} of the split {list(lay.layer_split)}"
        v = self.compare(c, len(r), reason, "predicted")
        if v.verdict == "CONFIRMED" and c.context.get("layers", [r.start, r.stop - 1]) != [r.start, r.stop - 1]:
            a, b = c.context["layers"]
            v = Verdict(c.id, c.index, c.text, c.claimed, len(r), "REFUTED",
                        f"its layers are {r.start}-{r.stop - 1}, not {a}-{b} ({reason})", "predicted", 1.0)
        return v

    def _tp_group_gpus(self, c: Claim) -> Verdict:
        lay, gmap, gpn = self.spec.layout, self.spec.parallel.gpu_map, self.spec.cluster.gpus_per_node
        # GPU numbers run node by node: rank r is on node r // gpn, device gpu_map[r % gpn] there
        groups = [[r // gpn * gpn + gmap[r % gpn] if gmap else r for r in g] for g in lay.tp_groups()]
        if c.index >= len(groups):
            return Verdict(c.id, c.index, c.text, c.claimed, None, "REFUTED",
                           f"{self.strategy} has {len(groups)} TP groups (0-{len(groups) - 1})", "predicted")
        exp = groups[c.index]
        pl = lay.place(lay.tp_groups()[c.index][0])
        r = lay.layers_of_stage(pl.stage)
        reason = (f"TP innermost: group {c.index} is GPUs {exp}, DP replica {pl.dp}, stage {pl.stage} "
                  f"(layers {r.start}-{r.stop - 1})")
        bad = []
        if sorted(c.claimed) != sorted(exp):
            bad.append(f"GPUs {exp}, not {c.claimed}")
        if "stage" in c.context and c.context["stage"] != pl.stage:
            bad.append(f"it serves stage {pl.stage}, not {c.context['stage']}")
        if "layers" in c.context and c.context["layers"] != [r.start, r.stop - 1]:
            bad.append(f"its layers are {r.start}-{r.stop - 1}, not {c.context['layers'][0]}-{c.context['layers'][1]}")
        return Verdict(c.id, c.index, c.text, c.claimed, exp, "REFUTED" if bad else "CONFIRMED",
                       "; ".join(bad) + f" ({reason})" if bad else reason, "predicted")

    # -- communication (bytes per token)
    def _tp_allreduce_bytes_per_layer(self, c: Claim) -> Verdict:
        sh, d, tp = self.spec.shape, self.spec.dtype_bytes, self.spec.layout.tp
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), "TP all-reduce bytes per layer per token traced by the run", "measured")
        exp = 2 * sh.hidden * d if tp > 1 else 0
        reason = (f"per token: 2 all-reduces per layer (after o_proj and down_proj) x hidden {sh.hidden} x {d} B = "
                  f"{exp:,} B; a micro-batch of N tokens moves N times that" if tp > 1 else
                  "tp=1: no TP all-reduce") + self._run_note(why)
        alts = (_Alt(sh.hidden * d, None, "= one of the layer's two all-reduces"),) if tp > 1 else ()
        return self.compare(c, exp, reason, "predicted", alts=alts, binary=True)

    def _pp_sendrecv_bytes_per_stage(self, c: Claim) -> Verdict:
        sh, d, pp = self.spec.shape, self.spec.dtype_bytes, self.spec.layout.pp
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), "activation bytes per token per boundary traced by the run", "measured")
        exp = sh.hidden * d if pp > 1 else 0
        reason = (f"per token per boundary: the hidden state, {sh.hidden} x {d} B = {exp:,} B (plus a small "
                  f"int64 step header per micro-batch)" if pp > 1 else
                  "pp=1: no send/recv") + self._run_note(why)
        return self.compare(c, exp, reason, "predicted", binary=True)

    # -- run-time metrics
    def _throughput_rps(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        b = self.plan.bounds
        if v is not None:
            off = self.res.offered_rps
            tol = max(REL_RUNTIME * c.claimed, c.quantum)
            if off is not None and off < c.claimed - tol and v < c.claimed - tol:
                return self.unverified(c, f"the run offered {off:g} RPS, below the claim: it cannot show "
                                          f"{_fmt(c.claimed)} RPS (measured {v:.3g})", "measured")
            ok = v >= c.claimed - tol   # a throughput claim is a promise: more is no refutation
            return Verdict(c.id, c.index, c.text, c.claimed, v, "CONFIRMED" if ok else "REFUTED",
                           f"measured {v:.3g} RPS (completed requests / measured duration)", "measured",
                           c.claimed / v if v else None)
        if not self.stated:
            return self.unverified(c, "needs a run: the report states no workload (lengths, arrivals)"
                                   + self._run_note(why))
        if c.claimed > b.rps_bound + max(REL_STATIC * b.rps_bound, c.quantum):
            return Verdict(c.id, c.index, c.text, c.claimed, b.rps_bound, "REFUTED",
                           f"above the planner's upper bound {b.rps_bound:.3g} RPS for the stated workload "
                           f"(mean {b.input_mean:.0f} in / {b.output_mean:.0f} out tokens)" + self._run_note(why),
                           "predicted", c.claimed / b.rps_bound)
        return self.unverified(c, f"needs a run: within the planner's upper bound {b.rps_bound:.3g} RPS "
                                  f"for the stated workload" + self._run_note(why), "predicted")

    def _runtime_only(self, c: Claim, what: str) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), f"{what} measured by the run", "measured", rel=REL_RUNTIME)
        return self.unverified(c, f"needs a run ({what})" + self._run_note(why))

    def _gpu_utilization_pct(self, c: Claim) -> Verdict:
        return self._runtime_only(c, "mean NVML GPU utilisation")

    def _nvlink_utilization_pct(self, c: Claim) -> Verdict:
        return self._runtime_only(c, "mean NVLink tx bytes/s over link bandwidth")

    def _bubble_ratio(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(c, float(v), "mean idle/wall over stages on measured steps", "measured",
                                rel=REL_RUNTIME)
        p, m = self.spec.layout.pp, self.spec.run.micro_batches
        if p == 1:
            return self.compare(c, 0.0, "pp=1: no pipeline, no bubble", "predicted")
        if m is None:
            return self.unverified(c, f"needs m, the micro-batches in flight, which the report does not state: "
                                      f"(p-1)/(m+p-1) with p={p} is {(p - 1) / (2 * p - 1):.3f} at m=p; "
                                      "or a run" + self._run_note(why))
        exp = (p - 1) / (m + p - 1)
        return self.compare(c, exp, f"(p-1)/(m+p-1) with p={p}, m={m} (run.micro_batches)" + self._run_note(why),
                            "predicted")

    def _slo_rows(self) -> tuple[list[dict], str | None]:
        if self.res is None:
            return [], None
        w = self.why_not
        why = w.get("hardware") or w.get("model") or w.get("layout") or w.get("complete")
        return ([], why) if why else (self.res.slo, None)

    def _slo_margin_pct(self, c: Claim) -> Verdict:
        rows, why = self._slo_rows()
        margins = [r["margin_pct"] for r in rows if isinstance(r, dict) and r.get("margin_pct") is not None]
        if not margins:
            why = why or ("no SLO margin measured" if self.res else None)
            return self.unverified(c, "needs a run with SLO targets; the report states neither its targets nor "
                                      "its workload" + self._run_note(why))
        lo = min(margins)
        ok = lo >= c.claimed[0] - max(c.quantum, 0.5)
        return Verdict(c.id, c.index, c.text, c.claimed, [min(margins), max(margins)],
                       "CONFIRMED" if ok else "REFUTED",
                       f"measured SLO margins {lo:.1f}% to {max(margins):.1f}% ((target − measured)/target)",
                       "measured")

    def _latency_slos_met(self, c: Claim) -> Verdict:
        rows, why = self._slo_rows()
        lat = [r for r in rows if isinstance(r, dict) and r.get("passed") is not None
               and str(r.get("target", "")).split("_")[0] in ("ttft", "tpot", "itl", "e2e", "queue")]
        if not lat:
            return self.unverified(c, "needs a run with latency SLO targets"
                                   + self._run_note(why or ("no latency target measured" if self.res else None)))
        missed = [r["target"] for r in lat if not r["passed"]]
        met = not missed
        return Verdict(c.id, c.index, c.text, c.claimed, met, "CONFIRMED" if met == c.claimed else "REFUTED",
                       "every latency target met" if met else f"missed: {', '.join(missed)}", "measured")


def verify(doc: ClaimsDoc, config: str | None = None, results: str | None = None) -> Report:
    spec, notes, stated = context_spec(doc, config)
    res = load_results(results) if results else None
    pl = plan(spec)
    ck = Checker(doc, spec, pl, stated, res)
    verdicts = [ck.check(c) for c in doc.claims]
    if res is not None:
        notes += [f"run not usable for {k}-dependent claims: {v}" for k, v in ck.why_not.items() if v]
    lay = spec.layout
    return Report(verdicts,
                  {"name": spec.shape.name, "dtype": spec.model.dtype, "params": pl.params_total},
                  {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split),
                   "micro_batches": spec.run.micro_batches},
                  {"gpu": spec.gpu.name, "nodes": spec.cluster.nodes, "gpus_per_node": spec.cluster.gpus_per_node},
                  stated, results, notes)
