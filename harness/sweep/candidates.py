"""The sweep's candidate layouts: their names, the ``--layouts`` value read into them, and the
planner's view of each (``harness.plan.search.evaluate``: its bound and why it is refused).

A layout's name is ``tp{T}-pp{P}-dp{D}`` with the degrees that are 1 left out after the first
(``tp2-pp4``, ``tp2-pp2-dp2``, ``tp1-pp8``, ``tp8``); a name reads back to the same degrees (an
omitted degree is 1). ``auto``: every (tp, pp, dp) whose product is the cluster's GPUs and that the
planner accepts structurally (TP divides the heads, KV heads and MLP width; no more stages than
layers; no TP group across nodes) and in memory. A listed layout the planner refuses is an error
naming the reason: the sweep would only fail later, after minutes of runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import UsageError
from harness.plan.search import Candidate, evaluate, factorizations

_NAME = re.compile(r"^tp(\d+)(?:-pp(\d+))?(?:-dp(\d+))?$")


@dataclass(frozen=True, order=True)
class LayoutKey:
    tp: int
    pp: int = 1
    dp: int = 1

    @property
    def name(self) -> str:
        parts = [f"tp{self.tp}"]
        if self.pp != 1 or self.dp != 1:
            parts.append(f"pp{self.pp}")
        if self.dp != 1:
            parts.append(f"dp{self.dp}")
        return "-".join(parts)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def overrides(self, spec) -> tuple[str, ...]:
        """The ``--set`` strings that turn ``spec`` into this layout (its own layer split and GPU
        map kept on its own layout only; elsewhere an even split and the identity map)."""
        own = (self.tp, self.pp, self.dp) == (spec.layout.tp, spec.layout.pp, spec.layout.dp)
        out = [f"parallel.tp={self.tp}", f"parallel.pp={self.pp}", f"parallel.dp={self.dp}"]
        if not own:
            out += ["parallel.layer_split=null", "parallel.gpu_map=null"]
        return tuple(out)


def parse_name(text: str) -> LayoutKey:
    m = _NAME.match(text.strip().lower())
    if not m:
        raise UsageError(
            f"--layouts: {text!r} is not a layout; write tp2-pp4, tp2-pp2-dp2 or tp8 (comma "
            "separated), or auto"
        )
    tp, pp, dp = (int(g) if g else 1 for g in m.groups())
    if min(tp, pp, dp) < 1:
        raise UsageError(f"--layouts: {text!r}: every degree must be >= 1")
    return LayoutKey(tp, pp, dp)


def spec_layout(spec) -> LayoutKey:
    return LayoutKey(spec.layout.tp, spec.layout.pp, spec.layout.dp)


@dataclass(frozen=True)
class Candidates:
    """The layouts to consider (``keys``, spec's own included) and the planner's view of each."""

    keys: tuple[LayoutKey, ...]
    planned: dict  # LayoutKey -> Candidate
    spec_key: LayoutKey


def candidates(spec, layouts: str) -> Candidates:
    """``--layouts`` (``auto`` or a comma-separated list) → the candidates, in the order given
    (``auto``: tp, then pp ascending), the spec's own layout always among them; ``UsageError``
    when a listed layout does not use the cluster's GPUs or the planner refuses it."""
    gpus = spec.cluster.nodes * spec.cluster.gpus_per_node
    own = spec_layout(spec)
    planned: dict[LayoutKey, Candidate] = {}
    if layouts.strip().lower() == "auto":
        for tp, pp, dp in sorted(factorizations(gpus)):
            c = evaluate(spec, tp, pp, dp)
            if c.accepted or (tp, pp, dp) == (own.tp, own.pp, own.dp):
                planned[LayoutKey(tp, pp, dp)] = c
    else:
        for part in [p for p in layouts.split(",") if p.strip()]:
            key = parse_name(part)
            if key.gpus != gpus:
                raise UsageError(
                    f"--layouts: {key.name} uses {key.gpus} GPUs but the cluster has {gpus} "
                    "(cluster.nodes x gpus_per_node); give layouts with tp*pp*dp = "
                    f"{gpus}"
                )
            c = evaluate(spec, key.tp, key.pp, key.dp)
            if not c.accepted and key != own:
                raise UsageError(
                    f"--layouts: {key.name} cannot run: {'; '.join(c.reasons)}; leave it out"
                )
            planned[key] = c
        if not planned:
            raise UsageError("--layouts: no layout given; write auto or e.g. tp2-pp4,tp1-pp8")
    if own not in planned:
        planned[own] = evaluate(spec, own.tp, own.pp, own.dp)
    return Candidates(tuple(planned), planned, own)


def planner_row(c: Candidate) -> dict:
    """The planner's prediction of one candidate, as ``sweep.json`` keeps it."""
    return {
        "accepted": c.accepted,
        "reasons": list(c.reasons),
        "capacity_rps": c.capacity_rps,
        "rps_bound": c.rps_bound,
        "tpot_floor_ms": c.tpot_floor_ms,
        "ttft_floor_ms": c.ttft_floor_ms,
    }
