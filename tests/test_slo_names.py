"""SLO targets in vLLM's spelling (its result keys) and in the older one name the same targets."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.plan.bounds import slo_limits
from harness.spec.slo import judge, parse_target, per_request_thresholds_ms, resolve_targets

SUMMARY = {
    "p99_ttft_ms": 1500.0,
    "mean_e2el_ms": 900.0,
    "median_tpot_ms": 40.0,
    "p90_e2el_ms": 1200.0,
    "std_itl_ms": 7.0,
    "request_throughput": 9.0,
    "request_goodput": 6.0,
    "output_throughput": 300.0,
    "total_token_throughput": 900.0,
}


@pytest.mark.parametrize(
    "vllm, older, key, value",
    [
        ("p99_ttft_ms <= 2000", "ttft_p99_ms <= 2000", "p99_ttft_ms", 2000.0),
        ("mean_e2el_ms <= 1000", "e2e_mean_ms <= 1000", "mean_e2el_ms", 1000.0),
        ("p90_e2el_ms <= 30000", "e2e_p90_s <= 30", "p90_e2el_ms", 30000.0),
        ("median_tpot_ms <= 50", "tpot_median_ms <= 50", "median_tpot_ms", 50.0),
        ("request_throughput >= 8", "throughput_rps >= 8", "request_throughput", 8.0),
        ("request_goodput >= 5", "goodput_rps >= 5", "request_goodput", 5.0),
        ("output_throughput >= 250", "output_tps >= 250", "output_throughput", 250.0),
    ],
)
def test_both_spellings_name_one_target(vllm, older, key, value):
    a, b = parse_target(vllm), parse_target(older)
    assert (a.summary_key, a.value, a.metric, a.stat) == (b.summary_key, b.value, b.metric, b.stat)
    assert a.summary_key == key and a.value == value
    [va], [vb] = judge([a], SUMMARY), judge([b], SUMMARY)
    assert (va.measured, va.passed, va.margin_pct) == (vb.measured, vb.passed, vb.margin_pct)
    assert resolve_targets(None, [older, vllm]) == [a]  # the later one replaces the earlier


def test_verdicts_margins_and_what_the_planner_reads():
    targets = resolve_targets(
        "mlperf-llama2-70b-server",
        [
            "p99_ttft_ms <= 1000",
            "std_itl_ms <= 10",
            "total_token_throughput >= 1000",
            "p99_e2el_ms <= 3000",
        ],
    )
    assert [t.text for t in targets][:2] == [
        "p99_ttft_ms <= 1000",
        "tpot_p99_ms <= 200",
    ]  # replaces the preset's
    verdicts = {v.target.text: v for v in judge(targets, SUMMARY)}
    assert (
        verdicts["p99_ttft_ms <= 1000"].passed is False
        and verdicts["p99_ttft_ms <= 1000"].margin_pct == -50.0
    )
    assert verdicts["std_itl_ms <= 10"].passed is True and verdicts[
        "std_itl_ms <= 10"
    ].margin_pct == pytest.approx(30)
    assert verdicts["total_token_throughput >= 1000"].margin_pct == pytest.approx(-10)
    assert verdicts["tpot_p99_ms <= 200"].measured is None  # not in this summary: not measured
    assert per_request_thresholds_ms(targets) == {"ttft": 1000.0, "tpot": 200.0, "e2e": 3000.0}
    assert slo_limits(
        [parse_target("p99_tpot_ms <= 50"), parse_target("request_throughput >= 8")]
    ) == {"tpot_s": 0.05, "throughput_rps": 8.0}


@pytest.mark.parametrize(
    "text, message",
    [
        ("p99_ttft_s <= 2", "vLLM's latency keys are in ms: write 'p99_ttft_ms'"),
        ("p99.9_ttft_ms <= 2", "unknown statistic 'p99.9'"),
        ("p25_tpot_ms <= 2", "unknown statistic 'p25'"),
        (
            "request_throughput <= 2",
            "request_throughput is a rate; write 'request_throughput >= 2'",
        ),
        ("p99_ttft_ms >= 2", "p99_ttft_ms is a latency; write 'p99_ttft_ms <= 2'"),
        ("p99_latency_ms <= 2", "unknown metric 'p99_latency_ms'"),
    ],
)
def test_bad_targets_say_how_to_write_them(text, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        parse_target(text)
