"""Every (tp, pp, dp) layout of a cluster, ranked by the planner's capacity under the SLOs.

Pure: each candidate is planned with ``planner.plan(spec, layout)`` (an even layer split; the
spec's own layer_split and gpu_map apply to its own layout only). A candidate is rejected, with
every reason that applies, when its TP degree does not divide the model's heads, KV heads, MLP
width or vocabulary, when it has more stages than layers, when a TP group would span nodes,
when it does not fit in memory, or when the SLO targets are out of reach (TPOT/TTFT floors above
the targets, capacity below the throughput target). Accepted ones are ranked by capacity:
the largest request rate the planner allows while meeting the latency targets (``rps_slo``),
or the plain bound ``rps_bound`` when the spec has no latency target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.plan.planner import plan
from harness.spec.layout import Layout, even_split


@dataclass(frozen=True)
class Candidate:
    tp: int
    pp: int
    dp: int
    accepted: bool
    reasons: tuple[str, ...]
    capacity_rps: float | None
    rps_bound: float | None
    tpot_floor_ms: float | None
    ttft_floor_ms: float | None
    max_weight_gb: float | None
    min_kv_tokens: int | None
    is_spec_layout: bool

    @property
    def name(self) -> str:
        return f"TP{self.tp}-PP{self.pp}-DP{self.dp}"


def factorizations(n: int) -> list[tuple[int, int, int]]:
    """Every (tp, pp, dp) with tp·pp·dp = n."""
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return [(t, p, n // (t * p)) for t in divs for p in divs if (n // t) % p == 0]


def structural_reasons(shape, gpus_per_node: int, tp: int, pp: int) -> list[str]:
    out = []
    for what, n in (
        ("heads", shape.num_heads),
        ("KV heads", shape.num_kv_heads),
        ("MLP width", shape.intermediate),
    ):  # the vocabulary is padded instead
        if n % tp:
            out.append(f"tp={tp} does not divide {what} ({n})")
    if pp > shape.num_layers:
        out.append(f"pp={pp} > {shape.num_layers} layers")
    if tp > gpus_per_node:
        out.append(f"TP group spans nodes ({tp} > {gpus_per_node} GPUs per node)")
    elif gpus_per_node % tp:
        out.append(
            f"TP groups straddle nodes ({gpus_per_node} GPUs per node not a multiple of tp={tp})"
        )
    return out


def evaluate(spec, tp: int, pp: int, dp: int) -> Candidate:
    own = (tp, pp, dp) == (spec.layout.tp, spec.layout.pp, spec.layout.dp)
    reasons = structural_reasons(spec.shape, spec.cluster.gpus_per_node, tp, pp)
    if reasons:
        return Candidate(tp, pp, dp, False, tuple(reasons), None, None, None, None, None, None, own)
    lay = spec.layout if own else Layout(tp, pp, dp, even_split(spec.shape.num_layers, pp))
    p = plan(spec, None if own else lay)
    b = p.bounds
    capacity = b.rps_slo if b.rps_slo is not None else b.rps_bound
    return Candidate(
        tp,
        pp,
        dp,
        not p.problems,
        p.problems,
        capacity if p.fits else 0.0,
        b.rps_bound,
        b.tpot_floor_s * 1e3,
        b.ttft_floor_s * 1e3,
        max(r.weight_bytes for r in p.ranks) / 1e9,
        min(s.kv_token_capacity for s in p.stages),
        own,
    )


@dataclass(frozen=True)
class SearchResult:
    gpus: int
    candidates: tuple[Candidate, ...]  # accepted by capacity (best first), then rejected

    def to_dict(self) -> dict:
        return {
            "gpus": self.gpus,
            "candidates": [dict(asdict(c), name=c.name) for c in self.candidates],
        }


def search(spec) -> SearchResult:
    n = spec.cluster.nodes * spec.cluster.gpus_per_node
    cands = [evaluate(spec, *f) for f in factorizations(n)]
    ok = sorted(
        (c for c in cands if c.accepted), key=lambda c: (-(c.capacity_rps or 0.0), c.tp * c.pp)
    )
    bad = sorted(
        (c for c in cands if not c.accepted), key=lambda c: (-(c.capacity_rps or -1.0), c.tp, c.pp)
    )
    return SearchResult(n, tuple(ok + bad))
