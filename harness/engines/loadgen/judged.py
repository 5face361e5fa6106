"""What a LoadGen-driven run adds to ``summary.json`` (pure, from LoadGen's logs and our records):
the ``loadgen`` block, LoadGen's verdict beside ours.

* ``validity``: LoadGen's VALID / INVALID, ``failed``: its rules that failed in words (latency
  limits at the percentile, minimum duration, minimum query count, early stopping), its own
  recommendation and early-stopping lines;
* ``settings``: what LoadGen was told (scenario, rate, token-latency limits, percentile, query
  count, minimum duration) and ``rules``: whether MLPerf's 600 s minimum duration was enforced;
* ``agreement``: LoadGen's own percentiles (its detail log) beside ours from the same requests on
  our clock, both by LoadGen's rule (the sorted sample at ⌊N·p⌋) so the comparison checks the
  clocks, not the percentile definitions; ``ok`` when every row is within 1 % or 1 ms.

LoadGen's TPOT per sample is (latency − first-token latency) / (n_tokens − 1) with its
``n_tokens``, ours (``harness.measure.metrics.tpot_s``) the same with our count; Offline reports
no token percentiles, so the E2E latency percentiles are compared there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from harness.engines.loadgen.bridge import LOG_FILES
from harness.engines.loadgen.settings import LoadGenOptions
from harness.measure.metrics import RequestRecord, e2e_s, tpot_s, ttft_s
from harness.measure.percentiles import lower_rank_percentile
from harness.results.imports.loadgen import DETAIL, read_detail, verdict

TOLERANCE_MS, TOLERANCE_REL = 1.0, 0.01
_SERVER_ROWS = (
    ("p50_ttft_ms", "result_first_token_50.00_percentile_latency_ns", ttft_s, 50.0),
    ("p90_ttft_ms", "result_first_token_90.00_percentile_latency_ns", ttft_s, 90.0),
    ("p99_ttft_ms", "result_first_token_99.00_percentile_latency_ns", ttft_s, 99.0),
    ("p50_tpot_ms", "result_time_per_output_token_50.00_percentile_ns", tpot_s, 50.0),
    ("p90_tpot_ms", "result_time_per_output_token_90.00_percentile_ns", tpot_s, 90.0),
    ("p99_tpot_ms", "result_time_per_output_token_99.00_percentile_ns", tpot_s, 99.0),
)
_OFFLINE_ROWS = (
    ("p50_e2el_ms", "result_50.00_percentile_latency_ns", e2e_s, 50.0),
    ("p90_e2el_ms", "result_90.00_percentile_latency_ns", e2e_s, 90.0),
    ("p99_e2el_ms", "result_99.00_percentile_latency_ns", e2e_s, 99.0),
)


def agreement(detail: dict[str, Any], records: Sequence[RequestRecord], server: bool) -> list[dict]:
    """One row per percentile LoadGen logged: its value and ours (ms), the difference, and whether
    it is within 1 % or 1 ms."""
    rows = []
    main = [r for r in records if not r.warmup and r.completed]
    for ours_key, tool_key, fn, q in _SERVER_ROWS if server else _OFFLINE_ROWS:
        if tool_key not in detail:
            continue
        theirs = float(detail[tool_key]) * 1e-6
        v = lower_rank_percentile([x for x in map(fn, main) if x is not None], q)
        ours = None if v is None else v * 1e3
        diff = None if ours is None else ours - theirs
        rows.append(
            {
                "metric": ours_key,
                "loadgen_key": tool_key,
                "loadgen_ms": theirs,
                "ours_ms": ours,
                "diff_ms": diff,
                "within": diff is not None
                and abs(diff) <= max(TOLERANCE_MS, TOLERANCE_REL * abs(theirs)),
            }
        )
    return rows


def loadgen_block(
    opts: LoadGenOptions,
    log_dir: Path,
    records: Sequence[RequestRecord],
    issued: int,
    scheduling: str | None = None,
) -> dict[str, Any]:
    """The summary's ``loadgen`` block; without a detail log (LoadGen never finished) its
    ``validity`` is None and ``note`` says why."""
    settings = {
        "scenario": "Server" if opts.scenario == "server" else "Offline",
        "target_qps": opts.target_qps if opts.scenario == "server" else None,
        "ttft_limit_ms": opts.ttft_ms,
        "tpot_limit_ms": opts.tpot_ms,
        "percentile": opts.percentile,
        "min_query_count": opts.queries,
        "min_duration_ms": opts.min_duration_ms,
    }
    block: dict[str, Any] = {
        "settings": settings,
        "mlperf_rules": opts.mlperf_rules,
        "rules": opts.rules_note(),
        "issued": issued,
        "logs": [f for f in LOG_FILES if (Path(log_dir) / f).exists()],
        "scheduling": scheduling,
    }
    try:
        detail = read_detail(Path(log_dir) / DETAIL)
    except Exception as e:  # noqa: BLE001 (a cut-short test: the block says so, the run goes on)
        return {**block, "validity": None, "failed": [], "note": f"no LoadGen result: {e}"}
    v = verdict(detail)
    rows = agreement(detail, records, opts.scenario == "server")
    return {
        **block,
        "validity": v["validity"],
        "failed": v["failed"],
        "recommendation": v["recommendation"],
        "early_stopping": v["early_stopping"],
        "agreement": rows,
        "agreement_ok": bool(rows) and all(r["within"] for r in rows),
    }
