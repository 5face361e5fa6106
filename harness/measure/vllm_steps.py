"""Every vLLM worker's parsed trace → the reference engine's ``steps`` table (pure; the schema
``harness.results.schema.STEPS_SCHEMA``, no other column): one row per DP replica per non-empty
engine step of the profiled window.

Matching the workers' steps. vLLM's engine core schedules one batch at a time and every worker of
the replica executes it: the TP ranks of a stage together, the stages one after another (with PP,
stage s may run batch k while stage s+1 runs batch k−1: different micro-batches at different
times, so times cannot match them). A step is matched by its ordinal instead: the k-th non-empty
step range on every worker of a replica is the replica's batch k, the same ``step`` as in ``comm``
and ``stages``. That holds only when every traced worker of the replica ran the same non-empty
steps (requests and tokens, ``Step.counts``) in the same order; a replica whose workers differ gets
no rows and a note (the ``vllm trace steps agree across ranks`` check fails with it).

Empty steps. With PP the engine also calls its workers with nothing scheduled
(``execute_context_0(0)_generation_0(0)``; the real TP2-PP4 window of tests/data/vllm-trace has 52
per worker beside 17 non-empty ones, about pp − 1 per step, while every request waits for its
token from the pipeline). They compute nothing and move nothing (no communication op falls in
one), so they are counted per worker (``summary.vllm_trace.empty_steps``), are no rows, and do
not advance ``step``.

Columns the trace gives:
- ``replica`` (the workers' DP rank), ``step`` (the ordinal above);
- ``n_prefill_rows``/``n_decode_rows``: the range's request counts (vLLM's "context" requests, a
  chunk of a long prompt included; its "generation" requests); ``n_rows`` their sum; ``n_tokens``
  the range's prompt plus generated tokens (scheduled); ``phase`` prefill | decode | mixed from the
  two counts, as the reference scheduler's batches;
- ``padded_tokens``: the tokens the step computed, the first dimension of its TP all-reduce (its
  elements / hidden: scheduled plus any padding); null without an all-reduce (tp = 1) or where the
  replica's ranks disagree;
- ``t_submit_s``: when the replica's first stage began the step (the earliest start of the range
  on its TP ranks), in seconds from the window's first step on any rank like ``comm`` and
  ``stages`` (not from the run's start: the window runs before the measured one). The engine
  core's scheduling and its call to the workers come before it and are not traced. Null at the
  ``counts`` level (no times) or with no trace of stage 0;
- ``warmup``: false; the window runs after the warm-up (its requests are not records of the run,
  and its steps are none of the measured window's).
Null because the trace cannot give them (the engine core and the API server are not profiled,
``ignore_frontend``): ``in_flight`` and ``available`` (the engine core's batch queue and the
scheduler's waiting requests), ``t_done_s`` (when the step's tokens reached the engine core).
A step's per-rank times (start, receive, compute end, send end; busy and waiting from
``harness.measure.stages``) are the ``stages`` rows of the same ``step``.
"""

from __future__ import annotations

from collections import defaultdict

from harness.measure.vllm_tables import t0_us
from harness.measure.vllm_trace import RankTrace


def _replica_rows(
    dp: int, ranks: list[RankTrace], computed: dict, base: float, timed: bool
) -> list[dict]:
    rows = []
    stage0 = [r for r in ranks if r.worker.pp == 0]
    for k, s in enumerate(ranks[0].steps):
        pads = {computed[(r.worker.rank, k)] for r in ranks if (r.worker.rank, k) in computed}
        starts = [r.steps[k].start_us for r in stage0]
        rows.append(
            {
                "replica": dp,
                "step": k,
                "phase": s.phase,
                "n_rows": s.prefill_rows + s.decode_rows,
                "n_prefill_rows": s.prefill_rows,
                "n_decode_rows": s.decode_rows,
                "n_tokens": s.tokens,
                "padded_tokens": pads.pop() if len(pads) == 1 else None,
                "in_flight": None,
                "available": None,
                "t_submit_s": (min(starts) - base) / 1e6 if timed and starts else None,
                "t_done_s": None,
                "warmup": False,
            }
        )
    return rows


def step_rows(
    ranks: list[RankTrace], computed: dict[tuple[int, int], int], timed: bool = True
) -> tuple[list[dict], list[str]]:
    """(the ``steps`` rows, notes for the replicas left out). ``computed``: (rank, step) → the
    tokens its TP all-reduce computed (``vllm_tables.computed_tokens``); ``timed`` False: the
    ``counts`` level, no times."""
    base = t0_us(ranks) or 0.0
    by_dp: dict[int, list[RankTrace]] = defaultdict(list)
    for r in sorted(ranks, key=lambda x: x.worker.rank):
        by_dp[r.worker.dp].append(r)
    rows: list[dict] = []
    notes: list[str] = []
    for dp, rs in sorted(by_dp.items()):
        first = [s.counts for s in rs[0].steps]
        bad = [r.worker.rank for r in rs if [s.counts for s in r.steps] != first]
        if bad:
            notes.append(
                f"vLLM trace: no steps rows for replica {dp}: ranks {bad} traced other non-empty "
                f"steps than rank {rs[0].worker.rank}, so their k-th steps cannot be matched"
            )
            continue
        rows.extend(_replica_rows(dp, rs, computed, base, timed))
    return rows, notes
