"""Claim checks the planner settles alone: GPU counts, memory (weights, per GPU, per stage,
balance) and the layout (stage layers, TP groups). Mixed into ``verify.Checker``; each
``_<claim id>`` returns a Verdict."""

from __future__ import annotations

import re

from harness.verdicts.claims.parse import Claim
from harness.verdicts.claims.tolerance import EPS_ABS, Verdict
from harness.verdicts.claims.tolerance import Alt as _Alt
from harness.verdicts.claims.tolerance import fmt as _fmt
from harness.verdicts.claims.units import Reading, capacity_readings


class StaticChecks:
    """Checks of Checker, kept apart by subject (see verify.py)."""

    # -- hardware and counts
    def _total_gpus(self, c: Claim) -> Verdict:
        lay = self.spec.layout
        return self.compare(
            c,
            lay.world_size,
            f"{self.strategy} uses TP{lay.tp} x PP{lay.pp} x DP{lay.dp} = {lay.world_size} GPUs",
            "predicted",
        )

    def _gpu_memory_gb(self, c: Claim) -> Verdict:
        g = self.spec.gpu
        reason = f"{g.name} has {g.memory_gib:g} GiB usable = {g.memory_bytes / 1e9:.1f} GB"
        return self.compare(c, g.memory_bytes / 1e9, reason, "predicted")

    def _gpu_allocation_pct(self, c: Claim) -> Verdict:
        avail = self.doc.total_gpus or self.spec.cluster.nodes * self.spec.cluster.gpus_per_node
        world = self.spec.layout.world_size
        return self.compare(
            c, 100.0 * world / avail, f"{world} of {avail} available GPUs used", "stated"
        )

    # -- memory (weights)
    def _weights(self) -> tuple[int, int, list[int]]:
        ws = [r.weight_bytes for r in self.plan.ranks]
        return max(ws), min(ws), ws

    def _model_memory_gb(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        pl = self.plan
        if v is not None:
            return self.compare(
                c, float(v), "weights of one replica measured by the run", "measured", binary=True
            )
        exp = pl.params_total * pl.dtype_bytes / 1e9
        reason = (
            f"{pl.params_total:,} parameters x {pl.dtype_bytes} B ({pl.dtype}) = {exp:.2f} GB of "
            f"weights; "
            f"the KV cache comes on top" + self._run_note(why)
        )
        alts = (
            (
                _Alt(
                    pl.params_total * pl.dtype_bytes / 1e9 * self.spec.layout.dp,
                    None,
                    "= the weights of all DP replicas together",
                ),
            )
            if self.spec.layout.dp > 1
            else ()
        )
        return self.compare(c, exp, reason, "predicted", alts=alts, binary=True)

    def _no_tp_alts(self) -> tuple[_Alt, ...]:
        pl, lay = self.plan, self.spec.layout
        if lay.tp == 1:
            return ()
        return (
            _Alt(
                pl.params_total * pl.dtype_bytes / lay.pp / 1e9,
                "÷tp",
                "= model weights / pp: TP sharding ignored (÷tp missing)",
            ),
            _Alt(
                max(s.weight_bytes for s in pl.stages) / 1e9,
                "÷tp",
                "= a whole stage's weights on one GPU: TP sharding ignored (÷tp missing)",
            ),
        )

    def _memory_per_gpu_gb(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c,
                float(v),
                "max over ranks of the weight bytes measured by the run",
                "measured",
                alts=self._no_tp_alts(),
                tp_slip=True,
                binary=True,
            )
        hi, lo, _ = self._weights()
        st = self.plan.stages
        where = " and ".join(str(s.stage) for s in st if s.weight_bytes_per_rank >= 0.999 * hi)
        reason = (
            f"weights per GPU are {lo / 1e9:.2f} to {hi / 1e9:.2f} GB (the most on stage {where}); "
            f"weights only, the KV cache comes on top" + self._run_note(why)
        )
        return self.compare(
            c, hi / 1e9, reason, "predicted", alts=self._no_tp_alts(), tp_slip=True, binary=True
        )

    def _capacities(self, c: Claim) -> list[tuple[str, float]]:
        """What a memory percentage may be "of": the GPU's usable memory (the catalogue), then the
        capacity the claim's line states, else the one the report states (its hardware line), else
        the GPU's nominal size; each stated one under every reading of its unit."""
        g = self.spec.gpu
        out = [(f"{g.name}'s {g.memory_gib:g} GiB usable", float(g.memory_bytes))]
        if c.context.get("capacity"):
            return out + capacity_readings(*c.context["capacity"], "the line's")
        hw = next((x for x in self.doc.claims if x.id == "gpu_memory_gb"), None)
        if hw is not None:
            return out + capacity_readings(hw.claimed, hw.unit, "the report's")
        nominal = re.search(r"(\d+)GB$", g.name)
        return out + (
            capacity_readings(float(nominal.group(1)), "GB", f"{g.name}'s nominal")
            if nominal
            else []
        )

    def _memory_utilization_pct(self, c: Claim) -> Verdict:
        hi, _, _ = self._weights()
        caps = self._capacities(c)
        reason = (
            f"weights {hi / 1e9:.2f} GB on the fullest GPU / its memory; the KV cache may "
            f"use the rest"
        )
        own = c.context
        if own.get("memory_per_gpu_gb") and own.get("capacity"):
            reason += (
                f"; the claim is the report's own {_fmt(own['memory_per_gpu_gb'])} GB / "
                f"{_fmt(own['capacity'][0])} GB"
            )
        reads = tuple(Reading(f"% of {label}", 1.0, 100.0 * hi / cap) for label, cap in caps)
        return self.compare(
            c, 100.0 * hi / caps[0][1], reason, "predicted", tp_slip=True, reads=reads
        )

    def _memory_balance_epsilon(self, c: Claim) -> Verdict:
        v, why = self.measured(c)
        if v is not None:
            return self.compare(
                c,
                float(v),
                "max/mean − 1 of the per-rank weight bytes the run built",
                "measured",
                abs_tol=EPS_ABS,
            )
        hi, _, ws = self._weights()
        mean = sum(ws) / len(ws)
        extra = "; ".join(
            f"stage {s.stage} holds the {' and '.join(s.holds)}"
            for s in self.plan.stages
            if s.holds
        )
        reason = (
            f"ε = max/mean − 1 of per-GPU weights = {hi / 1e9:.2f} / {mean / 1e9:.2f} GB − 1"
            + (f" ({extra})" if extra else "")
            + self._run_note(why)
        )
        return self.compare(c, self.plan.weight_epsilon, reason, "predicted", abs_tol=EPS_ABS)

    def _stage_memory_gb(self, c: Claim) -> Verdict:
        st = self.plan.stages
        if c.index >= len(st):
            return Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                None,
                "REFUTED",
                f"{self.strategy} has no stage {c.index} (pp={len(st)})",
                "predicted",
            )
        v, why = self.measured(c)
        s = st[c.index]
        alts = (
            _Alt(
                self.plan.params_total * self.plan.dtype_bytes / len(st) / 1e9,
                None,
                "= model weights / pp: the embedding (stage 0) and lm_head (last stage) not placed",
            ),
        )
        if len(s.ranks) > 1:
            alts += (
                _Alt(
                    s.weight_bytes_per_rank / 1e9,
                    "xtp",
                    f"= one GPU's weights: the stage's {len(s.ranks)} TP ranks not added up",
                ),
            )
        if v is not None:
            return self.compare(
                c,
                float(v),
                f"weights of stage {c.index}'s ranks measured by the run",
                "measured",
                alts=alts,
                binary=True,
            )
        reason = (
            f"stage {c.index} weights over its {len(s.ranks)} TP rank(s): {s.layers} layers"
            + (f" + {' + '.join(s.holds)}" if s.holds else "")
            + f" = {s.weight_bytes / 1e9:.2f} GB ({s.weight_bytes_per_rank / 1e9:.2f} GB per GPU)"
            + self._run_note(why)
        )
        return self.compare(c, s.weight_bytes / 1e9, reason, "predicted", alts=alts, binary=True)

    # -- layout
    def _stage_layers(self, c: Claim) -> Verdict:
        lay = self.spec.layout
        if c.index >= lay.pp:
            return Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                None,
                "REFUTED",
                f"{self.strategy} has no stage {c.index} (pp={lay.pp})",
                "predicted",
            )
        r = lay.layers_of_stage(c.index)
        reason = (
            f"stage {c.index} holds layers {r.start}-{r.stop - 1} of the split "
            f"{list(lay.layer_split)}"
        )
        v = self.compare(c, len(r), reason, "predicted")
        if v.verdict == "CONFIRMED" and c.context.get("layers", [r.start, r.stop - 1]) != [
            r.start,
            r.stop - 1,
        ]:
            a, b = c.context["layers"]
            v = Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                len(r),
                "REFUTED",
                f"its layers are {r.start}-{r.stop - 1}, not {a}-{b} ({reason})",
                "predicted",
                1.0,
            )
        return v

    def _tp_group_gpus(self, c: Claim) -> Verdict:
        lay, gmap, gpn = (
            self.spec.layout,
            self.spec.parallel.gpu_map,
            self.spec.cluster.gpus_per_node,
        )
        # GPU numbers run node by node: rank r is on node r // gpn, device gpu_map[r % gpn] there
        groups = [
            [r // gpn * gpn + gmap[r % gpn] if gmap else r for r in g] for g in lay.tp_groups()
        ]
        if c.index >= len(groups):
            return Verdict(
                c.id,
                c.index,
                c.text,
                c.claimed,
                None,
                "REFUTED",
                f"{self.strategy} has {len(groups)} TP groups (0-{len(groups) - 1})",
                "predicted",
            )
        exp = groups[c.index]
        pl = lay.place(lay.tp_groups()[c.index][0])
        r = lay.layers_of_stage(pl.stage)
        reason = (
            f"TP innermost: group {c.index} is GPUs {exp}, DP replica {pl.dp}, stage {pl.stage} "
            f"(layers {r.start}-{r.stop - 1})"
        )
        bad = []
        if sorted(c.claimed) != sorted(exp):
            bad.append(f"GPUs {exp}, not {c.claimed}")
        if "stage" in c.context and c.context["stage"] != pl.stage:
            bad.append(f"it serves stage {pl.stage}, not {c.context['stage']}")
        if "layers" in c.context and c.context["layers"] != [r.start, r.stop - 1]:
            bad.append(
                f"its layers are {r.start}-{r.stop - 1}, not "
                f"{c.context['layers'][0]}-{c.context['layers'][1]}"
            )
        return Verdict(
            c.id,
            c.index,
            c.text,
            c.claimed,
            exp,
            "REFUTED" if bad else "CONFIRMED",
            "; ".join(bad) + f" ({reason})" if bad else reason,
            "predicted",
        )
