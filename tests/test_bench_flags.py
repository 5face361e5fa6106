"""harness.spec.bench_flags: vLLM bench serve's flags → spec overrides, with vLLM's semantics, and
the rule that a flag contradicting the spec file is an error naming both."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from harness.errors import UsageError
from harness.spec.bench_flags import BenchFlags, bench_overrides, parse_goodput, random_lengths
from harness.spec.spec import load_spec
from harness.spec.workload import build_trace

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml"


SHORT = {"input_len": {"dist": "fixed", "value": 16}, "output_len": {"dist": "fixed", "value": 16}}


def _spec_file(tmp_path, workload: dict | None = None, **sections) -> Path:
    raw = yaml.safe_load(CONFIG.read_text())
    if workload is not None:
        raw["workload"] = workload
    raw.update(sections)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _apply(path: Path, flags: BenchFlags, overrides=()):
    raw = yaml.safe_load(path.read_text())
    sets = bench_overrides(flags, raw, str(path), overrides)
    return sets, load_spec(path, [*overrides, *sets])


def test_rate_burstiness_lengths_seed_onto_the_spec(tmp_path):
    path = _spec_file(tmp_path, {})
    flags = BenchFlags(
        request_rate=8.0,
        burstiness=0.5,
        num_prompts=40,
        random_input_len=32,
        random_output_len=10,
        random_range_ratio=0.25,
        seed=7,
    )
    sets, spec = _apply(path, flags)
    w = spec.workload
    assert (w.arrival, w.rate_rps, w.burstiness, w.num_requests, w.seed) == (
        "gamma",
        8.0,
        0.5,
        40,
        7,
    )
    # vLLM: uniform integers on [floor(32·0.75), ceil(32·1.25)] = [24, 40], [floor(7.5), ceil(12.5)]
    # = [7, 13]
    assert (w.input_len.dist, w.input_len.min, w.input_len.max) == ("uniform", 24, 40)
    assert (w.output_len.dist, w.output_len.min, w.output_len.max) == ("uniform", 7, 13)
    assert "workload.rate_rps=8.0" in sets and 'workload.arrival="gamma"' in sets
    trace = build_trace(w, spec.shape.vocab, 128)
    assert len(trace.requests) == 40 and {r.input_len for r in trace.requests} <= set(range(24, 41))
    gaps = [b.arrival_s - a.arrival_s for a, b in zip(trace.requests, trace.requests[1:])]
    assert 0 < sum(gaps) / len(gaps) < 1.0  # mean gap 1/8 s, gamma draws
    assert BenchFlags() and bench_overrides(BenchFlags(), {}) == []


def test_burstiness_one_is_poisson_and_inf_is_constant(tmp_path):
    path = _spec_file(tmp_path, {"num_requests": 4, **SHORT})
    assert (
        _apply(path, BenchFlags(request_rate=2.0, burstiness=1.0))[1].workload.arrival == "poisson"
    )
    spec = _apply(path, BenchFlags(request_rate=2.0, burstiness=math.inf))[1]
    assert spec.workload.arrival == "constant"
    assert [r.arrival_s for r in build_trace(spec.workload, spec.shape.vocab, 128).requests] == [
        0,
        0.5,
        1.0,
        1.5,
    ]


def test_rate_inf_is_a_closed_loop(tmp_path):
    path = _spec_file(tmp_path, {"num_requests": 12, **SHORT})
    sets, spec = _apply(path, BenchFlags(request_rate=math.inf, max_concurrency=4))
    assert (spec.workload.arrival, spec.workload.concurrency) == ("closed", 4)
    # without a cap, vLLM sends every request at once: a closed loop as wide as the run
    spec = _apply(path, BenchFlags(request_rate=math.inf))[1]
    assert (spec.workload.arrival, spec.workload.concurrency) == ("closed", 12)
    with pytest.raises(UsageError, match="give --num-prompts"):
        bench_overrides(BenchFlags(request_rate=math.inf), {})
    with pytest.raises(UsageError, match="--burstiness 0.5 has no effect with --request-rate inf"):
        bench_overrides(BenchFlags(request_rate=math.inf, max_concurrency=2, burstiness=0.5), {})


def test_a_cap_with_a_rate_is_the_spec_field_max_concurrency(tmp_path):
    path = _spec_file(tmp_path, {"num_requests": 4, **SHORT})
    sets, spec = _apply(path, BenchFlags(request_rate=4.0, max_concurrency=2))
    assert sets == ["workload.rate_rps=4.0", "workload.max_concurrency=2"]
    assert spec.workload.max_concurrency == 2 and spec.workload.rate_rps == 4.0
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    assert trace.max_concurrency == 2 and not trace.closed_loop
    # the reference engine splits the cap over its DP replicas: each needs a share of at least 1
    dp2 = ["parallel.tp=2", "parallel.pp=2", "parallel.dp=2"]
    assert load_spec(path, [*dp2, "workload.max_concurrency=2"]).workload.max_concurrency == 2
    with pytest.raises(
        UsageError, match=r"workload.max_concurrency: 1 < parallel.dp 2; each DP replica"
    ):
        load_spec(path, [*dp2, "workload.max_concurrency=1"])
    closed = _spec_file(
        tmp_path, {"arrival": "closed", "concurrency": 2, "num_requests": 4, **SHORT}
    )
    assert _apply(closed, BenchFlags(max_concurrency=2))[1].workload.concurrency == 2
    with pytest.raises(UsageError, match="a closed loop's cap is workload.concurrency"):
        load_spec(closed, ["workload.max_concurrency=2"])


def test_flags_override_the_file_and_only_a_disagreeing_set_is_an_error(tmp_path):
    """A flag overrides the spec file exactly as --set does; a flag and a --set that give one field
    different values are the only contradiction, named both."""
    path = _spec_file(tmp_path)  # rate_rps: 4, input_len uniform 16..64, num_requests 24, poisson
    sets, spec = _apply(
        path, BenchFlags(request_rate=3.0, num_prompts=12, random_input_len=32, seed=3)
    )
    w = spec.workload
    assert (w.rate_rps, w.num_requests, w.seed, w.arrival) == (3.0, 12, 3, "poisson")
    assert (w.input_len.dist, w.input_len.value) == ("fixed", 32)
    assert sets == [
        "workload.num_requests=12",
        "workload.rate_rps=3.0",
        'workload.input_len={"dist": "fixed", "value": 32}',
        "workload.seed=3",
    ]
    # a closed loop over the file's poisson; the file's open-loop cap goes with it
    capped = _spec_file(tmp_path, {**yaml.safe_load(CONFIG.read_text())["workload"]})
    raw = yaml.safe_load(capped.read_text())
    raw["workload"]["max_concurrency"] = 2
    capped.write_text(yaml.safe_dump(raw))
    w = _apply(capped, BenchFlags(request_rate=math.inf, max_concurrency=4))[1].workload
    assert (w.arrival, w.concurrency, w.max_concurrency) == ("closed", 4, None)
    # a rate over the file's closed loop opens it, with vLLM's default gaps (Poisson)
    closed = _spec_file(
        tmp_path, {"arrival": "closed", "concurrency": 2, "num_requests": 4, **SHORT}
    )
    w = _apply(closed, BenchFlags(request_rate=4.0, max_concurrency=2))[1].workload
    assert (w.arrival, w.rate_rps, w.max_concurrency) == ("poisson", 4.0, 2)
    w = _apply(closed, BenchFlags(request_rate=4.0, burstiness=0.5))[1].workload
    assert (w.arrival, w.burstiness) == ("gamma", 0.5)
    with pytest.raises(UsageError, match="--burstiness shapes the gaps of an open loop, but"):
        bench_overrides(BenchFlags(burstiness=2.0), yaml.safe_load(closed.read_text()), "c.yaml")
    # the command line against itself
    raw = yaml.safe_load(path.read_text())
    cases = [
        (
            BenchFlags(num_prompts=10),
            ["workload.num_requests=30"],
            "--num-prompts 10 contradicts --set workload.num_requests=30 "
            "(it means workload.num_requests=10); drop one of them",
        ),
        (
            BenchFlags(request_rate=8.0),
            ["workload.rate_rps=5"],
            "--request-rate 8 contradicts --set workload.rate_rps=5",
        ),
        (
            BenchFlags(request_rate=8.0),
            ["workload.arrival=closed", "workload.concurrency=2"],
            "--request-rate 8 contradicts --set workload.arrival=closed",
        ),
        (
            BenchFlags(request_rate=math.inf, max_concurrency=4),
            ["workload.arrival=poisson"],
            "--request-rate inf --max-concurrency 4 (a closed loop) contradicts --set "
            "workload.arrival=poisson",
        ),
        (BenchFlags(seed=3), ["workload.seed=1"], "--seed 3 contradicts --set workload.seed=1"),
    ]
    for flags, overrides, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)):
            bench_overrides(flags, raw, str(path), overrides)
    # the same value twice is no contradiction
    assert bench_overrides(BenchFlags(num_prompts=30), raw, str(path), ["workload.num_requests=30"])


def test_goodput_and_percentile_flags(tmp_path):
    path = _spec_file(tmp_path, {"num_requests": 4, **SHORT})
    sets, spec = _apply(
        path,
        BenchFlags(
            goodput=["ttft:500", "tpot:100"],
            percentile_metrics="ttft,e2el",
            metric_percentiles="50,99.9",
        ),
    )
    assert spec.slo.goodput == {"ttft": 500.0, "tpot": 100.0}
    assert spec.run.percentile_metrics == ["ttft", "e2el"] and spec.run.metric_percentiles == [
        50.0,
        99.9,
    ]
    assert spec.to_dict()["slo"]["goodput"] == {
        "ttft": 500.0,
        "tpot": 100.0,
    }  # recorded in spec.yaml
    for flags, message in [
        (BenchFlags(goodput=["ttft=500"]), "--goodput: 'ttft=500': use KEY:MS"),
        (BenchFlags(goodput=["tpot:-1"]), "must be a number of ms >= 0"),
        (BenchFlags(percentile_metrics="ttft,foo"), "--percentile-metrics: 'foo' is not a metric"),
        (
            BenchFlags(metric_percentiles="50,101"),
            "--metric-percentiles: '101' is not a percentile",
        ),
        (BenchFlags(random_range_ratio=0.2), "--random-range-ratio: give --random-input-len"),
        (BenchFlags(random_input_len=8, random_range_ratio=1.0), "must be in \\[0, 1\\)"),
        (BenchFlags(request_rate=0.0), "--request-rate: must be > 0"),
        (BenchFlags(max_concurrency=0), "--max-concurrency: must be a whole number >= 1"),
    ]:
        with pytest.raises(UsageError, match=message):
            bench_overrides(flags, {})
    with pytest.raises(UsageError, match="slo.goodput: 'e2e:5'"):
        load_spec(path, ['slo.goodput={"e2e": 5}'])


def test_range_ratio_follows_vllm(tmp_path):
    assert random_lengths(1024, 0.0, 0, "--random-input-len") == {"dist": "fixed", "value": 1024}
    # ceil(100 · 1.1) = ceil(110.00000000000001) = 111, in vLLM's float arithmetic too
    assert random_lengths(100, 0.1, 0, "x") == {"dist": "uniform", "min": 90, "max": 111}
    assert random_lengths(100, 0.25, 0, "x") == {"dist": "uniform", "min": 75, "max": 125}
    assert random_lengths(3, 0.5, 1, "x") == {
        "dist": "uniform",
        "min": 1,
        "max": 5,
    }  # floor(1.5), ceil(4.5)
    with pytest.raises(UsageError, match="leaves --random-input-len 1 lengths down to 0"):
        random_lengths(1, 0.5, 0, "--random-input-len")
    sets = bench_overrides(
        BenchFlags(
            random_input_len=100,
            random_output_len=10,
            random_range_ratio='{"input": 0.25, "output": 0}',
        ),
        {},
    )
    assert sets == [
        'workload.input_len={"dist": "uniform", "min": 75, "max": 125}',
        'workload.output_len={"dist": "fixed", "value": 10}',
    ]
    assert parse_goodput(["e2el:3000"]) == {"e2el": 3000.0}


def test_goodput_thresholds_of_their_own_drive_the_summary():
    """slo.goodput replaces the targets' per-request thresholds for request_goodput."""
    from harness.results.summary import goodput_thresholds_ms

    spec = load_spec(CONFIG)
    assert goodput_thresholds_ms(spec) == {"ttft": 2000.0, "tpot": 500.0}
    spec = load_spec(CONFIG, ['slo.goodput={"ttft": 50}'])
    assert goodput_thresholds_ms(spec) == {"ttft": 50.0}
