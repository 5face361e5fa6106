"""MLPerf LoadGen as load generator and judge (harness.engines.loadgen), tested against LoadGen
itself (mlcommons-loadgen 6.0.17, the ``loadgen`` extra): its settings from the spec's SLOs, a run
of its Server and Offline scenarios through our SUT/QSL callbacks, and its logs read back by
harness.results.imports.loadgen, which must give LoadGen's own numbers from the trace.

The system under test here is an asyncio request function that streams tokens with real sleeps:
LoadGen, its clock, its schedule and its logs are the real ones."""

from __future__ import annotations

import asyncio

# the test extra (./setup.sh --test, CI) installs LoadGen: a missing one fails here, never skips
import mlperf_loadgen  # noqa: F401
import pytest

from harness.engines.loadgen.settings import latency_limits, make_options
from harness.engines.loadgen.settings import test_settings_values as settings_values
from harness.engines.loadgen.sut import Answer, Query, run_loadgen
from harness.errors import UsageError
from harness.measure.metrics import summarize
from harness.results.imports import loadgen as reader
from harness.results.imports.base import unreproduced
from harness.spec.slo import resolve_targets


def test_mlperf_preset_maps_to_loadgens_own_numbers():
    targets = resolve_targets("mlperf-llama2-70b-server", [])
    assert latency_limits(targets) == (2000.0, 200.0, 0.99)
    opts = make_options("Server", 8.0, 100, targets)
    v = settings_values(opts)
    assert (v["ttft_latency"], v["tpot_latency"]) == (2_000_000_000, 200_000_000)
    assert (v["scenario"], v["server_target_qps"], v["min_query_count"]) == ("Server", 8.0, 100)
    assert v["min_duration_ms"] == 0 and "NOT enforced" in opts.rules_note()
    assert v["performance_issue_unique"] is True  # each trace request once
    ruled = make_options("server", 8.0, 100, targets, mlperf_rules=True)
    assert settings_values(ruled)["min_duration_ms"] == 600_000
    # 600 s of queries: LoadGen must be free to draw the trace's requests again
    assert settings_values(ruled)["performance_issue_unique"] is False
    inter = resolve_targets("mlperf-llama2-70b-interactive", [])
    assert latency_limits(inter) == (450.0, 40.0, 0.99)


def test_bad_loadgen_options_are_one_line():
    mixed = resolve_targets(None, ["p99_ttft_ms <= 2000", "p90_tpot_ms <= 100"])
    with pytest.raises(UsageError, match="one percentile"):
        latency_limits(mixed)
    with pytest.raises(UsageError, match="needs workload.rate_rps"):
        make_options("server", None, 10, [])
    with pytest.raises(UsageError, match="not a LoadGen scenario"):
        make_options("singlestream", 4.0, 10, [])


async def _stream(q: Query, rec, clock, on_first):
    """First token after 15 ms, then one every 4 ms: the output_len tokens of the query."""
    rec.sent_s = clock()
    await asyncio.sleep(0.015)
    rec.first_token_s = clock()
    rec.token_times_s.append(rec.first_token_s)
    on_first(7)
    for _ in range(q.output_len - 1):
        await asyncio.sleep(0.004)
        rec.token_times_s.append(clock())
    rec.finish_s, rec.completed = rec.token_times_s[-1], True
    return Answer(tokens=list(range(q.output_len)))


QUERIES = [Query([1, 2, 3], 4 + i % 5, 3) for i in range(16)]


@pytest.fixture(scope="module")
def server_run(tmp_path_factory):
    opts = make_options("server", 30.0, 16, resolve_targets("mlperf-llama2-70b-server", []))
    return run_loadgen(opts, QUERIES, _stream, tmp_path_factory.mktemp("lg") / "server")


def test_server_run_logs_verdict_and_loadgens_numbers_from_the_trace(server_run):
    assert {p.name for p in server_run.log_dir.iterdir()} >= {
        "mlperf_log_summary.txt",
        "mlperf_log_detail.txt",
        "mlperf_log_trace.json",
        "mlperf_log_accuracy.json",
    }
    imp = reader.read(server_run.log_dir)
    v = imp.header["loadgen"]
    # 16 queries cannot pass LoadGen's early stopping; the duration rule was not applied
    assert v["result_validity"] == "INVALID" and v["early_stopping_met"] is False
    assert v["result_min_duration_met"] is True and v["result_min_queries_met"] is True
    assert [w.split(" ")[0] for w in imp.header["loadgen_verdict"]["failed"]] == ["early"]
    assert imp.header["ttft_latency_ns"] == 2_000_000_000
    assert len(imp.records) == 16 and sorted(r.request_id for r in imp.records) == list(range(16))
    assert sorted(r.output_tokens for r in imp.records) == sorted(q.output_len for q in QUERIES)
    m = summarize(imp.records, latency_origin="arrival")
    rows = imp.comparison_rows(m)
    assert unreproduced(rows) == []
    checked = {r["tool_key"] for r in rows if r["reproduced"]}
    assert {
        "result_first_token_99.00_percentile_latency_ns",
        "result_time_per_output_token_50.00_percentile_ns",
        "result_first_token_mean_latency_ns",
        "result_completed_samples_per_sec",
        "result_completed_tokens_per_second",
    } <= checked
    differ = {r["tool_key"]: r for r in rows if not r["same"]}
    assert "⌊N·p⌋" in differ["result_first_token_50.00_percentile_latency_ns"]["definition"]


def test_our_records_agree_with_loadgens_percentiles(server_run):
    """Our clock against LoadGen's, the same requests: TTFT p50/p90/p99 and TPOT p50/p99 within 1 %
    or 1 ms (both from the scheduled arrival; ours is stamped when LoadGen's issue callback ran)."""
    ours = summarize(server_run.records)
    theirs = summarize(reader.read(server_run.log_dir).records)
    assert ours["completed"] == theirs["completed"] == 16
    for key in ("p50_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_tpot_ms"):
        assert abs(ours[key] - theirs[key]) <= max(1.0, 0.01 * theirs[key]), key


def test_offline_run_is_valid_and_read_back(tmp_path):
    opts = make_options("offline", None, 8, [])
    run = run_loadgen(opts, QUERIES[:8], _stream, tmp_path / "offline")
    imp = reader.read(tmp_path / "offline" / "mlperf_log_detail.txt")
    assert (
        imp.header["scenario"] == "Offline" and imp.header["loadgen"]["result_validity"] == "VALID"
    )
    assert max(r.arrival_s for r in imp.records) == 0.0  # all issued at once
    assert all(r.first_token_s is not None for r in imp.records)
    rows = imp.comparison_rows(summarize(imp.records, latency_origin="arrival"))
    assert unreproduced(rows) == [] and any(
        r["tool_key"] == "result_samples_per_second" and r["reproduced"] for r in rows
    )
    assert len(run.records) == 8 and all(r.completed for r in run.records)
