"""What MLPerf LoadGen is told for a run (pure; no ``mlperf_loadgen`` import): the scenario, the
rate, the token-latency limits from the spec's SLOs, the query count and the duration rules.

LoadGen's settings (mlcommons/inference ``loadgen/test_settings.h``, 6.0.17) and where ours come
from:

* ``scenario``: ``Server`` (LoadGen's own Poisson schedule at ``server_target_qps`` =
  ``workload.rate_rps``) or ``Offline`` (every query at t = 0; ``offline_expected_qps`` only sizes
  LoadGen's query count, which ``min_query_count`` fixes here, except under ``mlperf_rules``);
* ``use_token_latencies = True`` with ``ttft_latency`` / ``tpot_latency`` (ns) = the spec's TTFT and
  TPOT latency targets, and ``server_target_latency_percentile`` = their percentile (LoadGen holds
  one percentile for both: ``p99_ttft_ms <= 2000`` and ``p99_tpot_ms <= 200``, MLPerf's Llama2-70B
  Server limits, give 2e9 / 2e8 ns at 0.99, exactly MLPerf's own numbers);
* ``min_query_count`` = ``workload.num_requests`` and ``performance_issue_unique``: every trace
  request is issued once (the QSL holds the trace);
* ``min_duration_ms``: 0 by default, so a short CPU run ends after its queries; ``mlperf_rules``
  sets MLPerf's 600 000 ms minimum and turns ``performance_issue_unique`` off, so LoadGen goes on
  issuing queries, drawing the trace's requests again, until the 600 s are over (with it on,
  LoadGen stops when the trace's requests are used up and calls the run INVALID: found on the
  first end-to-end run). Offline then issues ``offline_expected_qps`` × 600 s × 1.1 queries at
  once, so it takes the spec's ``workload.rate_rps`` as that rate. The output says which rule was
  applied;
* ``accuracy_log_probability = 1``: every response's token ids and ``n_tokens`` land in
  ``mlperf_log_accuracy.json``, so the logs alone give each request's token count (import-bench
  reads them back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from harness.errors import UsageError

SCENARIOS = ("server", "offline")
MLPERF_MIN_DURATION_MS = 600_000  # MLCommons inference rules: every performance run, 600 s
_PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "median": 0.50}


@dataclass(frozen=True)
class LoadGenOptions:
    """One LoadGen test: built once from the spec and the command line."""

    scenario: str  # "server" | "offline"
    target_qps: float  # Server: the Poisson rate; Offline: LoadGen's expected rate
    queries: int  # min_query_count (every trace request once)
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    percentile: float = 0.99
    mlperf_rules: bool = False  # enforce MLPerf's 600 s minimum duration
    seed: int = 0

    @property
    def min_duration_ms(self) -> int:
        return MLPERF_MIN_DURATION_MS if self.mlperf_rules else 0

    def rules_note(self) -> str:
        """Which duration rule LoadGen applied, in words (printed and kept in summary.json)."""
        if self.mlperf_rules:
            return "MLPerf's rules enforced: minimum duration 600 s (LoadGen min_duration_ms)"
        return (
            "MLPerf's 600 s minimum duration NOT enforced (min_duration_ms = 0; --mlperf-rules "
            "enforces it): LoadGen's verdict reads min_duration as met"
        )


def latency_limits(targets: Sequence[Any]) -> tuple[float | None, float | None, float]:
    """(TTFT ms, TPOT ms, percentile) from SLO targets (``harness.spec.slo`` objects with
    ``metric``, ``stat``, ``op``, ``value``), for LoadGen's token-latency limits. LoadGen judges one
    percentile for both: targets at two different percentiles are an error naming them."""
    found: dict[str, tuple[float, float]] = {}
    for t in targets:
        fam = {"ttft": "ttft", "tpot": "tpot"}.get(getattr(t, "metric", ""))
        if fam is None or t.op != "<=" or t.stat not in _PERCENTILES:
            continue
        found[fam] = (float(t.value), _PERCENTILES[t.stat])
    pcts = {p for _, p in found.values()}
    if len(pcts) > 1:
        raise UsageError(
            "slo.targets: LoadGen judges TTFT and TPOT at one percentile, but the targets use "
            f"{', '.join(f'{k} p{v[1] * 100:g}' for k, v in sorted(found.items()))}; give both "
            "at the same percentile"
        )
    ttft = found.get("ttft", (None, 0.99))[0]
    tpot = found.get("tpot", (None, 0.99))[0]
    return ttft, tpot, pcts.pop() if pcts else 0.99


def make_options(
    scenario: str,
    rate_rps: float | None,
    num_requests: int,
    targets: Sequence[Any],
    mlperf_rules: bool = False,
    seed: int = 0,
) -> LoadGenOptions:
    """The options for a spec's workload and SLO targets; bad combinations are one-line errors."""
    scenario = scenario.lower()
    if scenario not in SCENARIOS:
        raise UsageError(
            f"--loadgen: {scenario!r} is not a LoadGen scenario; use server or offline"
        )
    if scenario == "server" and (rate_rps is None or not math.isfinite(rate_rps) or rate_rps <= 0):
        raise UsageError(
            "--loadgen server: LoadGen's Server scenario needs workload.rate_rps (its Poisson "
            "rate); a closed loop has none: use --loadgen offline or give a rate"
        )
    if num_requests < 1:
        raise UsageError("--loadgen: workload.num_requests must be >= 1 (LoadGen's query count)")
    ttft, tpot, pct = latency_limits(targets)
    return LoadGenOptions(
        scenario=scenario,
        target_qps=float(rate_rps) if rate_rps and math.isfinite(rate_rps) else float(num_requests),
        queries=int(num_requests),
        ttft_ms=ttft,
        tpot_ms=tpot,
        percentile=pct,
        mlperf_rules=mlperf_rules,
        seed=seed,
    )


# LoadGen's defaults when the spec sets no limit: large enough never to bind (1 h).
_NO_LIMIT_NS = 3_600 * 10**9


def test_settings_values(opts: LoadGenOptions) -> dict[str, Any]:
    """Attribute → value for ``mlperf_loadgen.TestSettings`` (enum fields by name: ``scenario``
    "Server"/"Offline", ``mode`` "PerformanceOnly")."""
    ns = lambda ms: _NO_LIMIT_NS if ms is None else int(round(ms * 1e6))  # noqa: E731
    return {
        "scenario": "Server" if opts.scenario == "server" else "Offline",
        "mode": "PerformanceOnly",
        "server_target_qps": opts.target_qps,
        "offline_expected_qps": opts.target_qps,
        "use_token_latencies": True,
        "ttft_latency": ns(opts.ttft_ms),
        "tpot_latency": ns(opts.tpot_ms),
        "server_target_latency_percentile": opts.percentile,
        "min_query_count": opts.queries,
        "min_duration_ms": opts.min_duration_ms,
        # each trace request once, unless MLPerf's minimum duration needs LoadGen to reuse them
        "performance_issue_unique": not opts.mlperf_rules,
        "accuracy_log_probability": 1.0,
        "schedule_rng_seed": opts.seed,
        "sample_index_rng_seed": opts.seed,
        "qsl_rng_seed": opts.seed,
    }
