"""The serving loop on a simulated clock: the reference engine's own ``Scheduler`` and ``ServeLoop``
(its micro-batches-in-flight rules), with a ``SimStage`` in place of the pipeline.

Nothing of the scheduling is re-implemented here: ``ServeLoop.run`` releases arrivals, asks the
``Scheduler`` for micro-batches while fewer than ``groups`` are in flight, submits them, collects
the oldest when the pipeline is full (or nothing else can start), and sleeps to the next arrival
when idle — exactly as in a run. Only time is simulated:

- ``SimClock``: the loop's ``clock``; ``sleep(dt)`` advances it (the loop's idle wait);
- ``SimStage.submit`` (the coordinator runs stage 0 inside it): the clock advances by the model's
  ``loop_s`` (the coordinator's own time per step) and stage 0's cost; the micro-batch then flows
  down the stages, each a FIFO server: stage s starts at max(arrival, when it is free), arrival =
  the previous stage's end + the hop, and holds the micro-batch for its fitted cost;
- ``SimStage.collect`` returns the oldest micro-batch's tokens at max(now, last stage's end +
  return hop), advancing the clock to it.

Each stage cost adds a residual drawn from its fit's own (``StageCost.draw``) and the return hop is
drawn from the measured ones (seeded: the same inputs give the same forecast); a model without
samples (an exact fit) is deterministic.

With pp == 1 ``submit`` returns the tokens at once, as ``PipelineStage.submit`` does. Every
micro-batch's features are checked against the fitted range of each stage (``extrapolated``).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from harness.engines.reference.loop import ServeLoop
from harness.engines.reference.scheduler import for_replica
from harness.predict.calibrate import PipelineModel


class SimClock:
    """The loop's clock. ``sleep`` is the loop's idle wait: it only happens with nothing in flight
    and nothing to schedule, so nothing changes before the next arrival and the clock jumps there
    (``next_arrival``: the scheduler's) instead of stepping 50 ms at a time as the real loop
    polls."""

    def __init__(self, next_arrival: Callable[[], float | None] | None = None) -> None:
        self.now = 0.0
        self.next_arrival = next_arrival

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        t = self.now + max(dt, 1e-6)  # never a zero step: the loop's idle wait always passes time
        nxt = self.next_arrival() if self.next_arrival is not None else None
        self.now = max(t, nxt) if nxt is not None else t

    def advance_to(self, t: float) -> None:
        self.now = max(self.now, t)


def batch_features(meta) -> dict[str, float]:
    """tokens, rows and attention (query, key) pairs of a submitted step (``StepMeta``)."""
    n, start = meta.n_tokens, meta.start_pos  # host integers
    return {
        "tokens": float(sum(n)),
        "rows": float(len(n)),
        "attn_pairs": float(sum(k * s + k * (k + 1) // 2 for k, s in zip(n, start))),
    }


@dataclass
class SimStage:
    """The surface of ``PipelineStage`` the serving loop uses (``submit``, ``collect``,
    ``ctx.comm.rec``)."""

    model: PipelineModel
    clock: SimClock
    fit_context: bool = True
    ctx: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(
            comm=SimpleNamespace(rec=SimpleNamespace(step=None, phase=None))
        )
    )
    busy_until: list[float] = field(default_factory=list)
    pending: deque = field(default_factory=deque)  # (meta, tokens ready at)
    extrapolated: dict = field(
        default_factory=lambda: defaultdict(lambda: [float("inf"), float("-inf")])
    )
    steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.busy_until = [0.0] * len(self.model.stages)
        self.rng = np.random.default_rng(self.seed)

    def _cost(self, s: int, feats: dict[str, float]) -> float:
        sc = self.model.stages[s]
        for k in sc.outside(feats):
            lo_hi = self.extrapolated[(s, k)]
            lo_hi[0], lo_hi[1] = min(lo_hi[0], feats[k]), max(lo_hi[1], feats[k])
        return sc.cost(feats, sc.draw(self.rng))

    def _hop(self, samples: list[float], mean: float) -> float:
        return float(samples[self.rng.integers(len(samples))]) if samples else mean

    def submit(self, meta, token_ids) -> torch.Tensor | None:
        feats = {**batch_features(meta), "depth": float(len(self.pending) + 1)}
        if not self.fit_context:
            feats["attn_pairs"] = 0.0
        self.steps += 1
        self.clock.now += self.model.loop_s
        t = self.clock.now + self._cost(0, feats)
        self.clock.now = t  # the coordinator computes stage 0 itself
        self.busy_until[0] = t
        for s in range(1, len(self.model.stages)):
            start = max(t + self.model.hop_s[s], self.busy_until[s])
            t = start + self._cost(s, feats)
            self.busy_until[s] = t
        tokens = torch.zeros(meta.batch, dtype=torch.long)
        if len(self.model.stages) == 1:
            return tokens
        self.pending.append(
            (meta, tokens, t + self._hop(self.model.return_samples, self.model.return_s))
        )
        return None

    def collect(self):
        meta, tokens, ready = self.pending.popleft()
        self.clock.advance_to(ready)
        return meta, tokens

    def extrapolations(self) -> list[dict]:
        out = []
        for (s, k), (lo, hi) in sorted(self.extrapolated.items()):
            mlo, mhi = self.model.stages[s].range[k]
            beyond = max(hi - mhi, mlo - lo, 0.0) / max(mhi - mlo, abs(mhi), 1e-12)
            out.append(
                {
                    "stage": s,
                    "feature": k,
                    "fitted_range": [mlo, mhi],
                    "forecast_range": [lo, hi],
                    "beyond_pct": 100.0 * beyond,
                }
            )
        return out


def _no_prompt(req) -> list[int]:
    """The simulator's prompts: only their lengths matter."""
    return [0] * req.input_len


@dataclass
class Simulation:
    records: list
    step_rows: list
    extrapolation: list[dict]
    sim_s: float
    steps: int


def simulate(spec, trace, model: PipelineModel, num_slots: int, seed: int = 0) -> Simulation:
    """Serve ``trace`` (one DP replica's share per replica, as a run does, through the scheduler
    the engine builds: ``scheduler.for_replica``) on the simulated clock; ``seed`` draws the
    residuals."""
    fit_context = not any("attn_pairs" in n for n in model.notes)
    records, rows, extra, steps, end = [], [], [], 0, 0.0
    for dp in range(spec.layout.dp):
        clock = SimClock()
        stage = SimStage(model, clock, fit_context=fit_context, seed=seed * 1009 + dp)
        loop = ServeLoop(
            stage, spec.micro_batches, torch.device("cpu"), clock, dp, sleep=clock.sleep
        )
        sched = for_replica(spec, trace, dp, num_slots, prompt_of=_no_prompt)
        clock.next_arrival = sched.next_arrival
        loop.run(sched, 0.0)
        records += sched.records
        rows += loop.step_rows
        extra += stage.extrapolations()
        steps += stage.steps
        end = max(end, clock.now)
    return Simulation(records, rows, extra, end, steps)


# Monte-Carlo replications: one simulated run of a few dozen requests carries the sampling noise of
# its residual draws (the median TTFT of 48 requests moved by ±5 % between seeds on the CPU demo);
# the forecast is each metric's mean over replications of R·n ≥ REPLICATED_REQUESTS requests in all.
REPLICATED_REQUESTS = 2000
MAX_REPLICATIONS = 8


def replications(num_requests: int) -> int:
    return max(1, min(MAX_REPLICATIONS, -(-REPLICATED_REQUESTS // max(1, num_requests))))


def _mean_metrics(runs: list[dict]) -> dict:
    """Each key's mean over the replications; a key equal in all (counts, None) keeps its value."""
    out = {}
    for k in runs[0]:
        vals = [m.get(k) for m in runs]
        if all(v == vals[0] for v in vals) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals
        ):
            out[k] = vals[0]
        else:
            out[k] = float(sum(vals) / len(vals))
    return out


def _merged_extrapolation(lists: list[list[dict]]) -> list[dict]:
    widest: dict = {}
    for items in lists:
        for x in items:
            key = (x["stage"], x["feature"])
            if key not in widest or x["beyond_pct"] > widest[key]["beyond_pct"]:
                widest[key] = x
    return [widest[k] for k in sorted(widest)]


def simulate_metrics(spec, model: PipelineModel, slo_thresholds_ms=None) -> dict:
    """``spec``'s workload simulated ``replications()`` times (seeds 0..R−1): the metrics of
    ``summary.json`` (each the mean over replications) and, where a client-side cap held requests
    in every replication, its ``metrics_from_send`` (TTFT and E2E from the send, as vLLM measures
    them), the extrapolations of any replication, and the simulation's size and wall time."""
    from harness.measure.metrics import summarize
    from harness.plan.planner import plan as make_plan
    from harness.plan.planner import seq_len
    from harness.results.summary import metrics_from_send
    from harness.spec.workload import build_trace

    trace = build_trace(spec.workload, spec.shape.vocab, seq_len(spec))
    slots, reps = make_plan(spec).kv_slots(), replications(len(trace.requests))
    t0 = time.perf_counter()
    sims = [simulate(spec, trace, model, slots, seed=r) for r in range(reps)]
    wall = time.perf_counter() - t0
    out = {
        "metrics": _mean_metrics(
            [summarize(s.records, slo_thresholds_ms=slo_thresholds_ms) for s in sims]
        ),
        "extrapolation": _merged_extrapolation([s.extrapolation for s in sims]),
        "simulation": {
            "steps": sims[0].steps,
            "simulated_s": sims[0].sim_s,
            "wall_s": wall,
            "requests": len(sims[0].records),
            "replications": reps,
        },
    }
    send = [metrics_from_send(s.records, slo_thresholds_ms) for s in sims]
    if all(m is not None for m in send):
        out["metrics_from_send"] = _mean_metrics(send)
    return out
