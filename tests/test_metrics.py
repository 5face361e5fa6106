"""harness.measure.metrics against hand-computed values (times in seconds, outputs in ms)."""

import math

import numpy as np
import pytest

from harness.errors import UsageError
from harness.measure.metrics import RequestRecord, meets_slo, progress, summarize, tpot_s
from harness.measure.percentiles import percentile, running_p99, stats

A = pytest.approx


def rec(
    rid,
    arrival,
    admitted,
    tokens,
    finish,
    in_len,
    out_len,
    *,
    warmup=False,
    completed=True,
    replica=0,
):
    return RequestRecord(
        rid,
        replica,
        arrival,
        admitted,
        tokens[0] if tokens else None,
        list(tokens),
        finish,
        in_len,
        out_len,
        warmup,
        completed,
    )


def scenario():
    """Per request (s): TTFT, E2E, TPOT, ITLs, queue
    r0: 0.5, 1.1, (1.1−0.5)/3 = 0.2, [0.2, 0.2, 0.2], 0.1
    r1: 0.2, 0.5, 0.3,                [0.3],           0.0
    r2: 1.0, 1.0, — (1 token),        [],              0.5
    r3: 0.4, 1.6, (4.6−3.4)/2 = 0.6,  [0.6, 0.6],      0.2
    w (warm-up): TTFT 2.0, TPOT 6.0, E2E 8.0; f: failed (finished, not completed);
    i: incomplete (never admitted)."""
    return [
        rec(0, 0.0, 0.1, [0.5, 0.7, 0.9, 1.1], 1.1, 10, 4),
        rec(1, 1.0, 1.0, [1.2, 1.5], 1.5, 20, 2, replica=1),
        rec(2, 2.0, 2.5, [3.0], 3.0, 30, 1),
        rec(3, 3.0, 3.2, [3.4, 4.0, 4.6], 4.6, 40, 3, replica=1),
        rec(9, -2.0, -2.0, [0.0, 6.0], 6.0, 100, 2, warmup=True),
        rec(5, 4.0, 4.1, [4.3], 4.4, 50, 8, completed=False),
        rec(6, 4.5, None, [], None, 60, 8, completed=False),
    ]


def test_counts_tokens_and_throughputs():
    s = summarize(scenario())
    assert (s["num_requests"], s["completed"], s["failed"], s["incomplete"]) == (6, 4, 1, 1)
    assert s["total_input_tokens"] == 100 and s["total_output_tokens"] == 10
    # duration: first non-warm-up arrival 0.0 → last non-warm-up finish 4.6 (warm-up's 6.0 ignored)
    assert s["duration_s"] == A(4.6)
    assert s["request_throughput"] == A(4 / 4.6)
    assert s["output_throughput"] == A(10 / 4.6)
    assert s["total_token_throughput"] == A(110 / 4.6)
    assert s["request_goodput"] is None and s["good_requests"] is None
    assert s["replica_completed"] == {"0": 2, "1": 2}


def test_latency_stats_hand_computed():
    s = summarize(scenario())
    # TTFT sorted [0.2, 0.4, 0.5, 1.0]
    assert s["mean_ttft_ms"] == A(525.0)
    assert s["median_ttft_ms"] == A(450.0) and s["p50_ttft_ms"] == A(450.0)
    assert s["std_ttft_ms"] == A(math.sqrt(0.086875) * 1e3)
    assert s["p90_ttft_ms"] == A(850.0)  # h = 3·0.90 = 2.7 → 0.5 + 0.7·0.5
    assert s["p95_ttft_ms"] == A(925.0)
    assert s["p99_ttft_ms"] == A(985.0)  # h = 2.97 → 0.5 + 0.97·0.5
    # TPOT [0.2, 0.3, 0.6]: the 1-token request is excluded
    assert s["mean_tpot_ms"] == A(1100.0 / 3)
    assert s["median_tpot_ms"] == A(300.0)
    assert s["p99_tpot_ms"] == A(594.0)  # h = 1.98 → 0.3 + 0.98·0.3
    # ITL pooled [0.2, 0.2, 0.2, 0.3, 0.6, 0.6]
    assert s["mean_itl_ms"] == A(350.0)
    assert s["median_itl_ms"] == A(250.0)
    assert s["p90_itl_ms"] == A(600.0)
    # E2E sorted [0.5, 1.0, 1.1, 1.6]
    assert s["mean_e2el_ms"] == A(1050.0)
    assert s["median_e2el_ms"] == A(1050.0)
    assert s["p99_e2el_ms"] == A(1585.0)
    # queue sorted [0.0, 0.1, 0.2, 0.5]
    assert s["mean_queue_ms"] == A(200.0)
    assert s["p99_queue_ms"] == A(491.0)


def test_warmup_reported_apart():
    s = summarize(scenario())
    assert s["warmup_requests"] == 1 and s["warmup_completed"] == 1
    assert s["warmup_mean_ttft_ms"] == A(2000.0)
    assert s["warmup_mean_tpot_ms"] == A(6000.0)
    assert s["warmup_mean_e2el_ms"] == A(8000.0)
    assert s["warmup_duration_s"] == A(8.0)
    # and it changes none of the main numbers
    without = summarize([r for r in scenario() if not r.warmup])
    for key in ("mean_ttft_ms", "p99_tpot_ms", "mean_itl_ms", "duration_s", "completed"):
        assert without[key] == s[key]


def test_goodput_every_threshold_must_hold():
    recs = scenario()
    # ttft ≤ 600 and tpot ≤ 400: r0 ok, r1 ok, r2 ttft 1000 ✗, r3 tpot 600 ✗
    s = summarize(recs, slo_thresholds_ms={"ttft": 600, "tpot": 400})
    assert s["good_requests"] == 2 and s["request_goodput"] == A(2 / 4.6)
    # adding e2e ≤ 1050 also drops r0 (1100)
    s = summarize(recs, slo_thresholds_ms={"ttft": 600, "tpot": 400, "e2e": 1050})
    assert s["good_requests"] == 1
    assert s["slo_thresholds_ms"] == {"ttft": 600.0, "tpot": 400.0, "e2el": 1050.0}
    # tpot ≤ 250 alone: r0 ok, r1 ✗, r2 (1 token, no TPOT) vacuously ok, r3 ✗
    s = summarize(recs, slo_thresholds_ms={"tpot": 250}, duration_s=10.0)
    assert s["good_requests"] == 2 and s["request_goodput"] == A(0.2)
    # the failed request is never good even though its TTFT is small
    assert not meets_slo(recs[5], {"ttft": 10_000.0})


def test_tpot_excludes_one_token_outputs():
    r = rec(0, 0.0, 0.0, [0.3], 0.3, 5, 1)
    assert tpot_s(r) is None
    s = summarize([r])
    assert s["mean_tpot_ms"] is None and s["mean_itl_ms"] is None
    assert s["mean_ttft_ms"] == A(300.0) and s["mean_e2el_ms"] == A(300.0)


def test_given_duration_overrides_measured():
    s = summarize(scenario(), duration_s=10.0)
    assert s["duration_s"] == 10.0 and s["request_throughput"] == A(0.4)
    with pytest.raises(UsageError, match="duration_s: must be > 0"):
        summarize(scenario(), duration_s=0)


def test_empty_inputs_are_well_defined():
    s = summarize([], slo_thresholds_ms={"ttft": 100})
    assert s["completed"] == 0 and s["total_output_tokens"] == 0
    assert s["mean_ttft_ms"] is None and s["p99_e2el_ms"] is None
    assert s["request_throughput"] is None and s["request_goodput"] is None
    assert s["good_requests"] == 0 and s["warmup_mean_ttft_ms"] is None
    only_warm = summarize([rec(0, 0.0, 0.0, [0.1, 0.2], 0.2, 1, 2, warmup=True)])
    assert only_warm["completed"] == 0 and only_warm["duration_s"] is None
    assert only_warm["warmup_mean_ttft_ms"] == A(100.0)
    assert stats([])["p99"] is None and percentile([], 50) is None
    assert running_p99([]) == []
    p = progress([], now_s=3.0)
    assert p.completed == 0 and p.p99_ttft_ms is None and p.request_throughput is None


def test_bad_slo_thresholds():
    with pytest.raises(UsageError, match="slo.latency: unknown SLO metric"):
        summarize(scenario(), slo_thresholds_ms={"latency": 5})
    with pytest.raises(UsageError, match="slo.ttft: must be a number of ms >= 0, got -1"):
        summarize(scenario(), slo_thresholds_ms={"ttft": -1})


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        xs = rng.exponential(size=n).tolist()
        for q in (0, 1, 50, 90, 95, 99, 100):
            assert percentile(xs, q) == A(float(np.percentile(xs, q)))
        st = stats(xs)
        assert st["std"] == A(float(np.std(xs))) and st["mean"] == A(float(np.mean(xs)))
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 99) == A(4.96)


def test_running_p99():
    assert running_p99([1.0, 2.0, 3.0]) == A([1.0, 1.99, 2.98])
    xs = np.random.default_rng(0).normal(size=50).tolist()
    run = running_p99(xs)
    assert run[-1] == A(float(np.percentile(xs, 99)))
    assert run[9] == A(float(np.percentile(xs[:10], 99)))


def test_progress_snapshot():
    recs = scenario() + [rec(7, 4.2, 4.3, [4.4], None, 5, 5, completed=False)]
    p = progress(recs, now_s=5.0)
    assert p.completed == 4 and p.in_flight == 1 and p.waiting == 1
    assert p.elapsed_s == A(5.0) and p.request_throughput == A(0.8)
    # TTFTs of non-warm-up requests with a first token: 0.5 0.2 1.0 0.4 0.3 (failed) 0.2 (r7)
    assert p.p99_ttft_ms == A(float(np.percentile([0.5, 0.2, 1.0, 0.4, 0.3, 0.2], 99)) * 1e3)


def test_record_dict_round_trip():
    r = scenario()[0]
    assert RequestRecord.from_dict(r.to_dict()) == r


def test_latency_origin_send_and_counted_tokens():
    """A request held 0.3 s at the client (sent 0.3 s after its arrival) and a stream whose chunks
    carried 5 tokens in 3 chunks: TTFT/E2E from the send are 0.3 s shorter, TPOT uses the 5."""
    r = RequestRecord(
        0,
        0,
        1.0,
        None,
        1.5,
        [1.5, 1.7, 2.1],
        2.1,
        10,
        5,
        completed=True,
        sent_s=1.3,
        output_tokens=5,
    )
    ours, vllm = summarize([r]), summarize([r], latency_origin="send")
    assert ours["mean_ttft_ms"] == A(500.0) and vllm["mean_ttft_ms"] == A(200.0)
    assert ours["mean_e2el_ms"] == A(1100.0) and vllm["mean_e2el_ms"] == A(800.0)
    # n = 5, not 3 chunks
    assert ours["mean_tpot_ms"] == vllm["mean_tpot_ms"] == A((2.1 - 1.5) / 4 * 1e3)
    assert ours["total_output_tokens"] == vllm["total_output_tokens"] == 5
    assert ours["mean_itl_ms"] == A(300.0)  # the chunks' gaps 0.2 and 0.4
    # goodput against a 400 ms TTFT threshold: met from the send (200 ms), missed from the arrival
    # (500 ms)
    assert (
        summarize([r], slo_thresholds_ms={"ttft": 400}, latency_origin="send")["good_requests"] == 1
    )
    assert summarize([r], slo_thresholds_ms={"ttft": 400})["good_requests"] == 0
    back = RequestRecord.from_dict(
        {**r.to_dict(), "sent_s": float("nan"), "output_tokens": float("nan")}
    )
    assert back.sent_s is None and back.output_tokens is None and tpot_s(back) == A(0.3)


def test_peaks_count_vllm_one_second_buckets():
    """t0 = 10.0 (first send). r0: sent 10.0, tokens 10.5 10.9 11.2, finish 11.2 → buckets 0,0,1;
    touches seconds 0-1. r1: sent 10.8 (⌊0.8⌋ = 0), tokens 11.1 11.3 12.05, finish 12.05 → buckets
    1,1,2; touches 0-2. B = ⌈12.05 − 10⌉ + 1 = 4: tokens [2, 3, 1, 0], requests [2, 2, 1, 0]."""
    from harness.measure.peaks import peak_buckets, peaks

    spans = [(10.0, [10.5, 10.9, 11.2], 11.2), (10.8, [11.1, 11.3, 12.05], 12.05)]
    assert peak_buckets(spans) == ([2, 3, 1, 0], [2, 2, 1, 0])
    assert peaks(spans) == {"max_output_tokens_per_s": 3.0, "max_concurrent_requests": 2}
    assert peaks([]) == {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}
    recs = [
        RequestRecord(i, 0, s, None, t[0], t, e, 4, 3, completed=True)
        for i, (s, t, e) in enumerate(spans)
    ]
    s = summarize(recs)
    assert (s["max_output_tokens_per_s"], s["max_concurrent_requests"]) == (3.0, 2)
