"""harness.results.bench_file: the vLLM-keyed result file, against a hand computation, vLLM's own
key set, and (where vLLM is installed) vLLM's own ``calculate_metrics`` on the same requests."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.measure.metrics import RequestRecord
from harness.results.bench_file import (
    bench_result,
    bench_result_of_run,
    header_from_run,
    result_filename,
    write_bench_file,
)
from harness.results.reader import load_run
from run_fixtures import build_synthetic_run

A = pytest.approx
FIXTURES = Path(__file__).parent / "fixtures" / "vllm_bench"
ROOT = Path(__file__).resolve().parents[1]
HEADER = {
    "date": "20260101-120000",
    "endpoint_type": "reference",
    "backend": "reference",
    "label": "t",
    "model_id": "tiny",
    "tokenizer_id": "tiny",
    "num_prompts": 4,
    "request_rate": 2.0,
    "burstiness": 1.0,
    "max_concurrency": None,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build_synthetic_run(tmp_path_factory.mktemp("synth") / "run")


def records():
    """r0: sent at its arrival 0.0, tokens 0.4 0.6 0.9 → TTFT 0.4, E2EL 0.9, TPOT 0.25, ITL 0.2 0.3.
    r1: due 0.5, held at the client until 1.0 (queue 0.5), chunks 1.2 1.3 carrying 3 tokens →
        TTFT 0.2 from the send (0.7 from the arrival), E2EL 0.3 (0.8), TPOT (1.3 − 1.2)/2 = 0.05,
        ITL 0.1.
    r2: failed after a first token at 1.1; r4: never started; w: warm-up (left out)."""
    return [
        RequestRecord(0, 0, 0.0, 0.05, 0.4, [0.4, 0.6, 0.9], 0.9, 10, 3, completed=True),
        RequestRecord(
            1,
            0,
            0.5,
            None,
            1.2,
            [1.2, 1.3],
            1.3,
            20,
            3,
            completed=True,
            sent_s=1.0,
            output_tokens=3,
        ),
        RequestRecord(2, 0, 1.0, 1.0, 1.1, [1.1], 1.15, 30, 3, completed=False),
        RequestRecord(
            9, 0, -1.0, -1.0, -0.5, [-0.5, -0.2], -0.2, 5, 2, warmup=True, completed=True
        ),
        RequestRecord(4, 0, 2.0, None, None, [], None, 40, 3, completed=False),
    ]


def test_result_numbers_equal_a_hand_computation():
    r = bench_result(
        records(), HEADER, 2.5, goodput_ms={"ttft": 300, "e2el": 850}, metric_percentiles=(50, 99.9)
    )
    assert (r["completed"], r["failed"], r["duration"]) == (2, 2, 2.5)
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (30, 6)  # r1 counts its 3 tokens
    assert r["request_throughput"] == A(2 / 2.5) and r["output_throughput"] == A(6 / 2.5)
    assert r["total_token_throughput"] == A(36 / 2.5)
    # goodput from the send: r0's TTFT 400 > 300 ms misses, r1's 200 meets (from its arrival, 700,
    # it would not)
    assert r["request_goodput"] == A(1 / 2.5)
    assert r["input_lens"] == [10, 20, 30, 40] and r["output_lens"] == [3, 3, 0, 0]
    assert r["ttfts"] == A([0.4, 0.2, 0.1, 0.0]) and r["latencies"] == A([0.9, 0.3, 0.0, 0.0])
    assert r["itls"][0] == A([0.2, 0.3]) and r["itls"][1] == A([0.1]) and r["itls"][2:] == [[], []]
    assert r["start_times"] == A([0.0, 1.0, 1.0, 2.0]) and r["queue_times"] == A(
        [0.0, 0.5, 0.0, 0.0]
    )
    assert r["errors"] == ["", "", "aborted", "not finished when the run stopped"]
    # TTFT [400, 200]; TPOT [250, 50]; ITL [200, 300, 100]; E2EL [900, 300] (ms); p = numpy linear
    assert (r["mean_ttft_ms"], r["median_ttft_ms"], r["std_ttft_ms"]) == (A(300), A(300), A(100))
    assert r["p50_ttft_ms"] == A(300) and r["p99.9_ttft_ms"] == A(200 + 0.999 * 200)
    assert (r["mean_tpot_ms"], r["std_tpot_ms"], r["p50_tpot_ms"]) == (A(150), A(100), A(150))
    assert (r["mean_itl_ms"], r["median_itl_ms"]) == (A(200), A(200))
    assert r["std_itl_ms"] == A(math.sqrt(2e4 / 3)) and r["p99.9_itl_ms"] == A(200 + 0.998 * 100)
    assert (r["mean_e2el_ms"], r["std_e2el_ms"]) == (A(600), A(300))
    # ours beside them: from the scheduled arrival
    assert r["mean_ttft_including_client_queue_ms"] == A(550) and r[
        "mean_e2el_including_client_queue_ms"
    ] == A(850)
    assert r["mean_client_queue_time_ms"] == A(250) and r["p50_client_queue_time_ms"] == A(250)
    # peaks: t0 = 0; tokens per second [3, 2, 0]; r0 touches second 0, r1 second 1
    assert (r["max_output_tokens_per_s"], r["max_concurrent_requests"]) == (3.0, 1)
    assert not any(k.startswith("p99_") for k in r)  # only the percentiles asked for


def test_keys_are_vllms_and_empty_families_are_zero_as_in_vllm():
    # --percentile-metrics ttft,tpot,itl,e2el
    vllm = json.loads((FIXTURES / "goodput.json").read_text())
    ours = bench_result(records(), HEADER, 2.5, metric_percentiles=(50, 90, 99))
    assert set(vllm) - {"generated_texts"} <= set(ours)
    assert list(ours)[:10] == list(vllm)[:10]  # the header first, in vLLM's order
    assert ours["request_goodput"] is None  # no --goodput thresholds, as vLLM
    brief = bench_result(records(), HEADER, 2.5, detailed=False)
    assert "ttfts" not in brief and "errors" not in brief and "p99_e2el_ms" in brief
    one_token = [RequestRecord(0, 0, 0.0, None, 0.1, [0.1], 0.1, 4, 1, completed=True)]
    r = bench_result(one_token, HEADER, 1.0)
    assert r["mean_tpot_ms"] == 0.0 and r["p99_itl_ms"] == 0.0  # numpy of [] or 0
    with pytest.raises(UsageError, match="--percentile-metrics: unknown metric 'foo'"):
        bench_result(records(), HEADER, 2.5, percentile_metrics=("foo",))
    with pytest.raises(UsageError, match="duration: must be > 0"):
        bench_result(records(), HEADER, 0.0)


def test_file_name_and_json_as_vllm_writes_them(tmp_path):
    spec = {
        "name": "tiny-closed",
        "model": {"preset": "tiny"},
        "workload": {"arrival": "closed", "concurrency": 4, "rate_rps": 1.0},
    }
    summary = {"started_utc": "2026-01-02T03:04:05Z", "metrics": {"num_requests": 4}}
    header = header_from_run(spec, summary)
    assert (header["request_rate"], header["max_concurrency"], header["date"]) == (
        "inf",
        4,
        "20260102-030405",
    )
    assert result_filename(header) == "tiny-closed-infqps-concurrency4-tiny-20260102-030405.json"
    gamma = header_from_run(
        {**spec, "workload": {"arrival": "gamma", "rate_rps": 8, "burstiness": 0.5}}, summary
    )
    assert (gamma["request_rate"], gamma["burstiness"], gamma["max_concurrency"]) == (
        8.0,
        0.5,
        None,
    )
    assert result_filename(gamma) == "tiny-closed-8.0qps-tiny-20260102-030405.json"
    path = write_bench_file(
        bench_result(records(), header, 2.5), tmp_path / "out" / result_filename(header)
    )
    back = json.loads(path.read_text())
    assert back["request_rate"] == "inf" and back["completed"] == 2 and back["itls"][1] == A([0.1])


def test_a_harness_run_as_a_vllm_file(synth):
    """A run directory (the synthetic run: reference-engine tables) → the file: the summary's
    numbers."""
    run = load_run(synth)
    r = bench_result_of_run(run)
    m = run.summary["metrics"]
    assert r["completed"] == m["completed"] and r["duration"] == A(m["duration_s"])
    for key in (
        "request_throughput",
        "output_throughput",
        "mean_ttft_ms",
        "p99_ttft_ms",
        "p99_tpot_ms",
        "median_itl_ms",
        "std_e2el_ms",
        "request_goodput",
        "max_concurrent_requests",
    ):
        assert r[key] == A(m[key]), key
    assert r["label"] == run.spec["name"] and r["request_rate"] == run.spec["workload"]["rate_rps"]
    # beside vLLM's keys: each of its statistics' interval, and the run's SLO verdicts with rules
    iv = r["harness_intervals"]
    assert iv["confidence"] == 0.95
    low, high = iv["metrics"]["median_ttft_ms"]
    assert low <= r["median_ttft_ms"] <= high
    assert iv["metrics"]["p99_ttft_ms"][1] is None  # 24 requests: no upper bound of a p99
    assert set(iv["metrics"]) >= {"request_throughput", "mean_itl_ms", "p99_tpot_ms"}
    slo = r["harness_slo"]
    assert slo["verdict"] == run.summary["verdict"] and slo["targets"] == run.summary["slo"]
    assert all(t["rule"] for t in slo["targets"])


def _vllm_python() -> str | None:
    exe = os.environ.get("HARNESS_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    return exe if Path(exe).is_file() else None


@pytest.mark.skipif(
    _vllm_python() is None,
    reason="vLLM is not installed (.venv-vllm or HARNESS_VLLM_PYTHON): "
    "the cross-check against vLLM's own calculate_metrics cannot run here",
)
@pytest.mark.slow
def test_vllm_own_calculate_metrics_agrees(tmp_path, synth):
    """Our file's per-request lists fed to vLLM's calculate_metrics give our file's numbers."""
    files = []
    for name, run in (("synth", load_run(synth)),):
        res = bench_result_of_run(run, detailed=True)
        files.append(str(write_bench_file(res, tmp_path / f"{name}.json")))
    mixed = bench_result(
        records(), HEADER, 2.5, goodput_ms={"ttft": 300, "e2el": 850}, metric_percentiles=(50, 90)
    )
    files.append(str(write_bench_file(mixed, tmp_path / "mixed.json")))
    goodput = [json.dumps({"ttft": 2000.0, "tpot": 200.0}), json.dumps({"ttft": 300, "e2el": 850})]
    out = subprocess.run(
        [
            _vllm_python(),
            str(Path(__file__).parent / "vllm_crosscheck.py"),
            *[f"{f}={g}" for f, g in zip(files, goodput)],
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == set(files)
    for f, rep in report.items():
        assert rep["mismatches"] == [] and rep["compared"] >= 20, (f, rep)
