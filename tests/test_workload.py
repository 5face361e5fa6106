"""harness.spec.workload: seeded arrivals and lengths, prompts, JSONL traces, input errors."""

import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from harness.errors import UsageError
from harness.spec.workload import (
    Request,
    build_trace,
    constant,
    gamma,
    load_trace,
    poisson,
    random_prompt,
    sample_lengths,
    save_trace,
)

VOCAB, CTX = 1000, 2048


def L(dist="fixed", value=None, min=None, max=None, mean=None, std=None, sigma=None):
    return NS(dist=dist, value=value, min=min, max=max, mean=mean, std=std, sigma=sigma)


def spec(**kw):
    base = dict(
        arrival="poisson",
        rate_rps=10.0,
        burstiness=1.0,
        concurrency=None,
        num_requests=50,
        duration_s=None,
        input_len=L(value=64),
        output_len=L(value=16),
        seed=7,
        trace=None,
    )
    base.update(kw)
    return NS(**base)


def gaps_cv(times):
    g = np.diff(times)
    return float(np.std(g) / np.mean(g)), float(np.mean(g))


def test_seeded_traces_identical_run_to_run():
    s = spec(
        input_len=L("uniform", min=10, max=500), output_len=L("lognormal", mean=100, sigma=0.8)
    )
    a, b = build_trace(s, VOCAB, CTX), build_trace(s, VOCAB, CTX)
    assert a == b
    assert a.prompt_ids(a.requests[3]) == b.prompt_ids(b.requests[3])
    c = build_trace(spec(seed=8, input_len=s.input_len, output_len=s.output_len), VOCAB, CTX)
    assert [r.arrival_s for r in c.requests] != [r.arrival_s for r in a.requests]
    # independent streams: a different arrival process keeps the same lengths
    d = build_trace(
        spec(arrival="constant", input_len=s.input_len, output_len=s.output_len), VOCAB, CTX
    )
    assert [r.input_len for r in d.requests] == [r.input_len for r in a.requests]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_rate_and_cv(seed):
    t = poisson(50.0, 10_000, np.random.default_rng(seed))
    assert len(t) == 10_000 and t[0] == 0.0 and np.all(np.diff(t) >= 0)
    cv, mean_gap = gaps_cv(t)
    assert abs(1.0 / mean_gap - 50.0) / 50.0 < 0.03
    assert abs(cv - 1.0) < 0.05


@pytest.mark.parametrize("b", [0.5, 4.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_gamma_cv_is_one_over_sqrt_b(b, seed):
    t = gamma(20.0, b, 10_000, np.random.default_rng(seed))
    cv, mean_gap = gaps_cv(t)
    expected = 1.0 / math.sqrt(b)
    assert abs(cv - expected) / expected < 0.05
    assert abs(1.0 / mean_gap - 20.0) / 20.0 < 0.03


def test_constant_and_closed_loop():
    assert constant(4.0, 4) == [0.0, 0.25, 0.5, 0.75]
    tr = build_trace(
        spec(arrival="closed", concurrency=3, rate_rps=None, num_requests=10), VOCAB, CTX
    )
    assert tr.closed_loop and tr.concurrency == 3 and len(tr.requests) == 10
    assert all(r.arrival_s == 0.0 for r in tr.requests)
    open_tr = build_trace(spec(), VOCAB, CTX)
    assert not open_tr.closed_loop and open_tr.concurrency is None


def test_duration_mode_generates_until_duration():
    tr = build_trace(spec(num_requests=None, duration_s=20.0, rate_rps=25.0), VOCAB, CTX)
    t = [r.arrival_s for r in tr.requests]
    assert all(x < 20.0 for x in t) and t[-1] > 19.0
    assert abs(len(t) - 500) < 4 * math.sqrt(500)
    assert [r.request_id for r in tr.requests] == list(range(len(t)))
    both = build_trace(spec(num_requests=10, duration_s=0.3, arrival="constant"), VOCAB, CTX)
    assert [r.arrival_s for r in both.requests] == [0.0, 0.1, 0.2]


def test_length_distributions_clipped_and_in_bounds():
    rng = np.random.default_rng(0)
    u = sample_lengths(L("uniform", min=5, max=9), 2000, rng, 100)
    assert u.min() == 5 and u.max() == 9 and set(u.tolist()) == set(range(5, 10))
    n = sample_lengths(L("normal", mean=10, std=50), 2000, rng, 60)
    assert n.min() == 1 and n.max() == 60  # both clip bounds are hit
    n2 = sample_lengths(L("normal", mean=100, std=30, min=80, max=120), 2000, rng, 1000)
    assert n2.min() == 80 and n2.max() == 120
    ln = sample_lengths(L("lognormal", mean=200, sigma=0.5), 20_000, rng, 10**6)
    assert abs(ln.mean() - 200) / 200 < 0.03  # ``mean`` is the arithmetic mean
    assert abs(np.median(ln) - 200 * math.exp(-0.125)) < 4  # median = exp(mu)
    f = sample_lengths(L(value=33), 5, rng, 100)
    assert f.tolist() == [33] * 5 and f.dtype == np.int64


def test_input_plus_output_fits_context():
    tr = build_trace(
        spec(num_requests=2000, input_len=L("normal", mean=900, std=400), output_len=L(value=24)),
        VOCAB,
        1024,
    )
    ins = np.array([r.input_len for r in tr.requests])
    outs = np.array([r.output_len for r in tr.requests])
    assert ins.max() == 1000 and ins.min() >= 1 and np.all(outs == 24)
    tr = build_trace(
        spec(
            num_requests=2000,
            input_len=L("uniform", min=1, max=900),
            output_len=L("lognormal", mean=300, sigma=1.0),
        ),
        VOCAB,
        1024,
    )
    tot = np.array([r.input_len + r.output_len for r in tr.requests])
    assert tot.max() == 1024 and all(r.output_len >= 1 for r in tr.requests)


def test_prompts_seeded_and_in_vocab():
    tr = build_trace(spec(num_requests=3, input_len=L(value=500)), VOCAB, CTX)
    p0, p1 = tr.prompt_ids(tr.requests[0]), tr.prompt_ids(tr.requests[1])
    assert len(p0) == 500 and min(p0) >= 0 and max(p0) < VOCAB and p0 != p1
    assert p0 == random_prompt(tr.seed, 0, 500, VOCAB)
    assert all(isinstance(x, int) for x in p0)


def test_save_load_round_trip(tmp_path):
    tr = build_trace(spec(num_requests=20, input_len=L("uniform", min=1, max=40)), VOCAB, CTX)
    path = tmp_path / "t.jsonl"
    save_trace(tr, path)
    back = load_trace(path, context_len=CTX, vocab_size=VOCAB)
    assert tuple(back) == tr.requests
    save_trace(tr, path, include_prompts=True)
    back = load_trace(path)
    assert [r.prompt for r in back] == [tr.prompt_ids(r) for r in tr.requests]
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]  # no temp file left
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"arrival_s", "input_len", "output_len", "prompt"}


def test_replay_trace_file(tmp_path):
    path = tmp_path / "r.jsonl"
    save_trace([Request(0, 0.0, 5, 3), Request(1, 0.5, 6, 2), Request(2, 2.0, 7, 1)], path)
    tr = build_trace(
        spec(trace=str(path), num_requests=None, duration_s=1.0, rate_rps=None), VOCAB, CTX
    )
    assert [(r.arrival_s, r.input_len, r.output_len) for r in tr.requests] == [
        (0.0, 5, 3),
        (0.5, 6, 2),
    ]
    tr = build_trace(
        spec(trace=str(path), arrival="closed", concurrency=2, num_requests=None), VOCAB, CTX
    )
    assert tr.closed_loop and [r.arrival_s for r in tr.requests] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"arrival_s": 1.0, "input_len": 0, "output_len": 4}',
            'trace.jsonl:7: expected "input_len" as a positive integer, got 0',
        ),
        (
            '{"arrival_s": 1.0, "input_len": 3, "output_len": "4"}',
            'trace.jsonl:7: expected "output_len" as a positive integer',
        ),
        ('{"arrival_s": 1.0, "input_len": 3', "trace.jsonl:7: not valid JSON"),
        ("[1, 2, 3]", "trace.jsonl:7: expected a JSON object"),
        (
            '{"arrival_s": 1.0, "input_length": 3, "output_len": 4}',
            "trace.jsonl:7: unknown key 'input_length'",
        ),
        (
            '{"arrival_s": -1, "input_len": 3, "output_len": 4}',
            'trace.jsonl:7: expected "arrival_s" as a number >= 0',
        ),
        (
            '{"arrival_s": 0.1, "input_len": 3, "output_len": 4}',
            'trace.jsonl:7: "arrival_s" 0.1 is before',
        ),
        (
            '{"arrival_s": 1.0, "input_len": 2000, "output_len": 100}',
            "trace.jsonl:7: input_len 2000 + output_len 100 exceeds",
        ),
        (
            '{"arrival_s": 1.0, "input_len": 2, "output_len": 1, "prompt": [1]}',
            'trace.jsonl:7: expected "prompt"',
        ),
        (
            '{"arrival_s": 1.0, "input_len": 2, "output_len": 1, "prompt": [1, 5000]}',
            'trace.jsonl:7: "prompt" token id 5000',
        ),
    ],
)
def test_malformed_trace_line_names_line_number(tmp_path, line, message):
    good = '{"arrival_s": 0.5, "input_len": 3, "output_len": 4}'
    # lines 1-5 good, line 6 blank (skipped), line 7 bad
    (tmp_path / "trace.jsonl").write_text("\n".join([good] * 5 + ["", line]) + "\n")
    with pytest.raises(UsageError) as e:
        load_trace(tmp_path / "trace.jsonl", context_len=CTX, vocab_size=VOCAB)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(rate_rps=-1), "workload.rate_rps: must be > 0, got -1"),
        (dict(rate_rps=0.0), "workload.rate_rps: must be > 0, got 0.0"),
        (
            dict(arrival="closed", concurrency=0),
            "workload.concurrency: must be >= 1 for arrival=closed, got 0",
        ),
        (
            dict(arrival="closed", concurrency=4, num_requests=None, duration_s=5.0),
            "workload.num_requests: required",
        ),
        (dict(arrival="gamma", burstiness=0), "workload.burstiness: must be > 0, got 0"),
        (dict(arrival="uniform"), "workload.arrival: unknown 'uniform'"),
        (dict(num_requests=0), "workload.num_requests: must be >= 1, got 0"),
        (dict(num_requests=None), "workload.num_requests: set num_requests or duration_s"),
        (dict(input_len=L(value=0)), "workload.input_len.value: must be > 0, got 0"),
        (
            dict(input_len=L(value=2048)),
            "workload.input_len.value: 2048 + output 16 exceeds the model context",
        ),
        (
            dict(output_len=L(value=3000)),
            "workload.output_len.value: 3000 leaves no room for input",
        ),
        (
            dict(input_len=L("uniform", min=1, max=1500), output_len=L("uniform", min=1, max=600)),
            "workload.output_len.max: 600 + input 1500 exceeds the model context of 2048 tokens; "
            "use at most 548",
        ),
        (
            dict(input_len=L("uniform", min=9, max=3)),
            "workload.input_len.min: 9 exceeds workload.input_len.max=3",
        ),
        (
            dict(output_len=L("normal", mean=10)),
            "workload.output_len.std: required for dist=normal",
        ),
        (dict(output_len=L("zipf", value=3)), "workload.output_len.dist: unknown 'zipf'"),
        (dict(input_len=L(value=2.5)), "workload.input_len.value: must be an integer"),
    ],
)
def test_bad_spec_names_the_field(kw, message):
    with pytest.raises(UsageError) as e:
        build_trace(spec(**kw), VOCAB, CTX)
    assert message in str(e.value)


def test_missing_trace_file(tmp_path):
    with pytest.raises(UsageError, match="workload.trace: cannot read"):
        build_trace(spec(trace=str(tmp_path / "nope.jsonl")), VOCAB, CTX)
