"""Claim checks from the run and the plan's traffic: communication bytes per token, run-time
rates, utilisations, bubble, SLOs. Mixed into ``verify.Checker``; each ``_<claim id>`` returns a
Verdict."""

from __future__ import annotations

from harness.verdicts.claims.parse import Claim
from harness.verdicts.claims.tolerance import REL_RUNTIME, REL_STATIC, Verdict
from harness.verdicts.claims.tolerance import Alt as _Alt
from harness.verdicts.claims.tolerance import fmt as _fmt


class RuntimeChecks:
    """Checks of Checker, kept apart by subject (see verify.py)."""

    def _traced_by(self) -> str:
        """Where the run's comm/stage numbers come from."""
        if self.res is not None and self.res.engine == "vllm":
            return "vLLM's own profiler, in the run's profiled window"
        return "the run"

    # -- communication (bytes per token)
    def _tp_allreduce_bytes_per_layer(self, c: Claim) -> Verdict:
        sh, d, tp = self.spec.shape, self.spec.dtype_bytes, self.spec.layout.tp
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c,
                float(v),
                f"TP all-reduce bytes per layer per token traced by {self._traced_by()}",
                "measured",
            )
        exp = 2 * sh.hidden * d if tp > 1 else 0
        reason = (
            f"per token: 2 all-reduces per layer (after o_proj and down_proj) x hidden {sh.hidden} "
            f"x {d} B = "
            f"{exp:,} B; a micro-batch of N tokens moves N times that"
            if tp > 1
            else "tp=1: no TP all-reduce"
        ) + self._run_note(why)
        alts = (
            (_Alt(sh.hidden * d, None, "= one of the layer's two all-reduces"),) if tp > 1 else ()
        )
        return self.compare(c, exp, reason, "predicted", alts=alts, binary=True)

    def _pp_sendrecv_bytes_per_stage(self, c: Claim) -> Verdict:
        sh, d, pp = self.spec.shape, self.spec.dtype_bytes, self.spec.layout.pp
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c,
                float(v),
                f"activation bytes per token per boundary traced by {self._traced_by()}"
                + (" (hidden states and residual)" if self.res.engine == "vllm" else ""),
                "measured",
            )
        exp = sh.hidden * d if pp > 1 else 0
        reason = (
            f"per token per boundary: the hidden state, {sh.hidden} x {d} B = {exp:,} B (plus a "
            f"small "
            f"int64 step header per micro-batch)"
            if pp > 1
            else "pp=1: no send/recv"
        ) + self._run_note(why)
        return self.compare(c, exp, reason, "predicted", binary=True)

    # -- run-time metrics
    def _throughput_rps(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        b = self.plan.bounds
        if v is not None:
            off = self.res.offered_rps
            tol = max(REL_RUNTIME * c.claimed, c.quantum)
            if off is not None and off < c.claimed - tol and v < c.claimed - tol:
                return self.unverified(
                    c,
                    f"the run offered {off:g} RPS, below the claim: it cannot show "
                    f"{_fmt(c.claimed)} RPS (measured {v:.3g})",
                    "measured",
                )
            ok = v >= c.claimed - tol  # a throughput claim is a promise: more is no refutation
            return Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                v,
                "CONFIRMED" if ok else "REFUTED",
                f"measured {v:.3g} RPS (completed requests / measured duration)",
                "measured",
                c.claimed / v if v else None,
            )
        if not self.stated:
            return self.unverified(
                c,
                "needs a run: the report states no workload (lengths, arrivals)"
                + self._run_note(why),
            )
        if c.claimed > b.rps_bound + max(REL_STATIC * b.rps_bound, c.quantum):
            return Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                b.rps_bound,
                "REFUTED",
                f"above the planner's upper bound {b.rps_bound:.3g} RPS for the stated workload "
                f"(mean {b.input_mean:.0f} in / {b.output_mean:.0f} out tokens)"
                + self._run_note(why),
                "predicted",
                c.claimed / b.rps_bound,
            )
        return self.unverified(
            c,
            f"needs a run: within the planner's upper bound {b.rps_bound:.3g} RPS "
            f"for the stated workload" + self._run_note(why),
            "predicted",
        )

    def _runtime_only(self, c: Claim, what: str) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c, float(v), f"{what} measured by the run", "measured", rel=REL_RUNTIME
            )
        return self.unverified(c, f"needs a run ({what})" + self._run_note(why))

    def _gpu_utilization_pct(self, c: Claim) -> Verdict:
        return self._runtime_only(c, "mean NVML GPU utilisation")

    def _nvlink_utilization_pct(self, c: Claim) -> Verdict:
        return self._runtime_only(c, "mean NVLink tx bytes/s over link bandwidth")

    def _bubble_ratio(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c,
                float(v),
                "mean idle/wall over stages on measured steps"
                + (" of vLLM's profiled window" if self.res.engine == "vllm" else ""),
                "measured",
                rel=REL_RUNTIME,
            )
        p, m = self.spec.layout.pp, self.spec.run.micro_batches
        if p == 1:
            return self.compare(c, 0.0, "pp=1: no pipeline, no bubble", "predicted")
        if m is None:
            return self.unverified(
                c,
                f"needs m, the micro-batches in flight, which the report does not state: "
                f"(p-1)/(m+p-1) with p={p} is {(p - 1) / (2 * p - 1):.3f} at m=p; "
                "or a run" + self._run_note(why),
            )
        exp = (p - 1) / (m + p - 1)
        return self.compare(
            c,
            exp,
            f"(p-1)/(m+p-1) with p={p}, m={m} (run.micro_batches)" + self._run_note(why),
            "predicted",
        )

    def _slo_rows(self) -> tuple[list[dict], str | None]:
        if self.res is None:
            return [], None
        w = self.why_not
        why = w.get("hardware") or w.get("model") or w.get("layout") or w.get("complete")
        return ([], why) if why else (self.res.slo, None)

    def _slo_margin_pct(self, c: Claim) -> Verdict:
        rows, why = self._slo_rows()
        margins = [
            r["margin_pct"] for r in rows if isinstance(r, dict) and r.get("margin_pct") is not None
        ]
        if not margins:
            why = why or ("no SLO margin measured" if self.res else None)
            return self.unverified(
                c,
                "needs a run with SLO targets; the report states neither its targets nor "
                "its workload" + self._run_note(why),
            )
        lo = min(margins)
        ok = lo >= c.claimed[0] - max(c.quantum, 0.5)
        return Verdict(
            c.id,
            c.index,
            c.text,
            c.claimed,
            [min(margins), max(margins)],
            "CONFIRMED" if ok else "REFUTED",
            f"measured SLO margins {lo:.1f}% to {max(margins):.1f}% ((target − measured)/target)",
            "measured",
        )

    def _latency_slos_met(self, c: Claim) -> Verdict:
        rows, why = self._slo_rows()
        lat = [
            r
            for r in rows
            if isinstance(r, dict)
            and r.get("passed") is not None
            and str(r.get("target", "")).split("_")[0] in ("ttft", "tpot", "itl", "e2e", "queue")
        ]
        if not lat:
            return self.unverified(
                c,
                "needs a run with latency SLO targets"
                + self._run_note(why or ("no latency target measured" if self.res else None)),
            )
        missed = [r["target"] for r in lat if not r["passed"]]
        met = not missed
        return Verdict(
            c.id,
            c.index,
            c.text,
            c.claimed,
            met,
            "CONFIRMED" if met == c.claimed else "REFUTED",
            "every latency target met" if met else f"missed: {', '.join(missed)}",
            "measured",
        )
