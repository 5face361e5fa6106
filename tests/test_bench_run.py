"""``harness run`` spoken as ``vllm bench serve``: its flags onto the spec, the cap on requests in
flight served by the reference engine, the vLLM-keyed result file at the end of the run (and
``import-bench`` of it) and the report written without a second command.

One CPU world (the demo's TP2-PP4 tiny Llama, 8 gloo ranks) for the whole module: the shipped
config with the flags overriding its workload (as ``--set`` would), 12 prompts at 40 requests/s
under --max-concurrency 3, so the cap binds from the first second.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from demo_run import DEMO_CONFIG, REPO, assert_verdict_exit
from harness.cli import main as cli
from harness.report.rows import fmt
from harness.results.reader import load_run

CAP, N, RATE = 3, 12, 40.0
FLAGS = [
    "--request-rate",
    str(RATE),
    "--max-concurrency",
    str(CAP),
    "--num-prompts",
    str(N),
    "--random-input-len",
    "24",
    "--random-output-len",
    "6",
    "--random-range-ratio",
    "0.5",
    "--seed",
    "3",
    "--goodput",
    "ttft:3000",
    "tpot:400",
    "--metric-percentiles",
    "50,99",
]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    run_dir, out = root / "run", root / "out"
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(DEMO_CONFIG),
        "--results-dir",
        str(run_dir),
        *FLAGS,
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(out),
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert_verdict_exit(p.returncode, run_dir, p.stderr)
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, (files, p.stderr[-2000:])
    return {"run_dir": run_dir, "file": files[0], "stderr": p.stderr, "root": root}


def _requests(run_dir):
    req = pd.read_parquet(run_dir / "requests.parquet")
    return req[~req["warmup"]].sort_values("request_id").reset_index(drop=True)


def _sent(req) -> np.ndarray:
    return np.where(req["sent_s"].isna(), req["arrival_s"], req["sent_s"]).astype(float)


@pytest.mark.slow
def test_the_flags_are_the_runs_spec(bench_run):
    spec = yaml.safe_load((bench_run["run_dir"] / "spec.yaml").read_text())
    w = spec["workload"]
    assert (w["rate_rps"], w["max_concurrency"], w["num_requests"], w["seed"]) == (RATE, CAP, N, 3)
    assert w["input_len"] == {
        "dist": "uniform",
        "min": 12,
        "max": 36,
        "value": None,
        "mean": None,
        "std": None,
        "sigma": None,
    }
    assert (w["output_len"]["min"], w["output_len"]["max"]) == (3, 9)
    assert spec["slo"]["goodput"] == {"ttft": 3000.0, "tpot": 400.0}
    assert spec["run"]["metric_percentiles"] == [50.0, 99.0]


@pytest.mark.slow
def test_never_more_than_the_cap_in_flight_and_the_cap_bound(bench_run):
    req = _requests(bench_run["run_dir"])
    assert len(req) == N and req["completed"].all()
    sent, finish = _sent(req), req["finish_s"].to_numpy()
    # at every send, the requests sent before it and not finished yet ([send, finish): one sent at
    # another's finish follows it)
    in_flight = [int(((sent <= t) & (finish > t)).sum()) for t in sent]
    assert max(in_flight) == CAP
    held = req[req["sent_s"].notna()]
    assert len(held) >= N - CAP and (held["sent_s"] > held["arrival_s"]).all()
    # a held request goes at the moment another finished: its send time is some request's finish
    assert all(np.isclose(finish, t, rtol=0, atol=1e-9).any() for t in held["sent_s"])
    # its admission (a KV slot) comes after the send, never before
    assert (req["admitted_s"] >= sent - 1e-9).all()


@pytest.mark.slow
def test_summary_carries_ttft_from_the_arrival_and_from_the_send(bench_run):
    s = json.loads((bench_run["run_dir"] / "summary.json").read_text())
    req = _requests(bench_run["run_dir"])
    first, sent, arrival = req["first_token_s"].to_numpy(), _sent(req), req["arrival_s"].to_numpy()
    assert s["metrics"]["p99_ttft_ms"] == pytest.approx(
        np.percentile(first - arrival, 99) * 1e3, rel=1e-9
    )
    send = s["metrics_from_send"]
    assert send["p99_ttft_ms"] == pytest.approx(np.percentile(first - sent, 99) * 1e3, rel=1e-9)
    assert send["mean_client_queue_ms"] == pytest.approx(np.mean(sent - arrival) * 1e3, rel=1e-9)
    assert send["p99_ttft_ms"] < s["metrics"]["p99_ttft_ms"]  # the client-side wait is in ours only


@pytest.mark.slow
def test_result_file_is_vllms_and_equals_the_runs_numbers(bench_run):
    path, run_dir = bench_run["file"], bench_run["run_dir"]
    s = json.loads((run_dir / "summary.json").read_text())
    m, send = s["metrics"], s["metrics_from_send"]
    f = json.loads(path.read_text())
    # vLLM's default name
    assert path.name == f"{s['name']}-{RATE}qps-concurrency{CAP}-tiny-{f['date']}.json"
    assert (f["request_rate"], f["max_concurrency"], f["burstiness"], f["num_prompts"]) == (
        RATE,
        CAP,
        1.0,
        N,
    )
    for key in (
        "completed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
        "mean_tpot_ms",
        "p99_tpot_ms",
        "median_itl_ms",
        "p99_itl_ms",
    ):
        assert f[key] == pytest.approx(m[key], rel=1e-12), key
    assert f["duration"] == pytest.approx(m["duration_s"], rel=1e-12) and f["failed"] == 0
    for stat in ("mean", "median", "p50", "p99"):  # vLLM's keys from the send; ours named apart
        assert f[f"{stat}_ttft_ms"] == pytest.approx(send[f"{stat}_ttft_ms"], rel=1e-12)
        assert f[f"{stat}_e2el_ms"] == pytest.approx(send[f"{stat}_e2el_ms"], rel=1e-12)
        assert f[f"{stat}_ttft_including_client_queue_ms"] == pytest.approx(
            m[f"{stat}_ttft_ms"], rel=1e-12
        )
        assert f[f"{stat}_e2el_including_client_queue_ms"] == pytest.approx(
            m[f"{stat}_e2el_ms"], rel=1e-12
        )
    assert f["request_goodput"] == pytest.approx(send["request_goodput"], rel=1e-12)
    assert "p90_ttft_ms" not in f  # --metric-percentiles 50,99 only
    req = _requests(run_dir)
    sent = _sent(req)
    assert f["ttfts"] == pytest.approx(list(req["first_token_s"] - sent), abs=1e-12)
    assert f["start_times"] == pytest.approx(list(sent), abs=1e-12)
    assert f["queue_times"] == pytest.approx(list(sent - req["arrival_s"]), abs=1e-12)
    assert f["output_lens"] == [len(t) for t in req["token_times_s"]] and f["errors"] == [""] * N
    assert f["input_lens"] == list(req["input_len"]) and len(f["itls"]) == N


@pytest.mark.slow
def test_import_bench_of_the_file_reproduces_it(bench_run):
    imported = bench_run["root"] / "imported"
    assert (
        cli(
            [
                "import-bench",
                str(bench_run["file"]),
                str(imported),
                "--config",
                str(DEMO_CONFIG),
                "--goodput",
                "ttft:3000",
                "tpot:400",
            ]
        )
        == 0
    )
    run = load_run(imported)
    assert run.summary["engine"]["unreproduced"] == []
    f = json.loads(bench_run["file"].read_text())
    m = run.summary["metrics"]
    for key in (
        "completed",
        "request_throughput",
        "request_goodput",
        "p99_ttft_ms",
        "mean_e2el_ms",
        "p99_tpot_ms",
    ):
        assert math.isclose(m[key], f[key], rel_tol=1e-9), key
    assert run.summary["engine"]["max_concurrency"] == CAP
    ours = _requests(bench_run["run_dir"])
    back = run.requests.sort_values("request_id")
    # the arrival comes back as the send minus the client queue: the schedule, held requests
    # included
    assert list(back["arrival_s"]) == pytest.approx(
        list(ours["arrival_s"] - ours["arrival_s"].min()), abs=1e-9
    )


@pytest.mark.slow
def test_the_run_wrote_its_report(bench_run):
    run_dir = bench_run["run_dir"]
    md = (run_dir / "report.md").read_text()
    assert (run_dir / "report.html").stat().st_size > 0 and "p99" in md.lower()
    send = json.loads((run_dir / "summary.json").read_text())["metrics_from_send"]
    row = next(ln for ln in md.splitlines() if ln.startswith("| TTFT from the send |"))
    # both origins in the latency table
    assert row.split("|")[-2].strip() == fmt(send["p99_ttft_ms"])
    assert f"report: {run_dir / 'report.html'}" in bench_run["stderr"]
    assert f"vLLM result file: {bench_run['file']}" in bench_run["stderr"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--request-rate", "fast"], "argument --request-rate: invalid float value: 'fast'"),
        (["--max-concurrency", "0"], "--max-concurrency: must be a whole number >= 1, got 0"),
        (
            ["--num-prompts", "30", "--set", "workload.num_requests=10"],
            "--num-prompts 30 contradicts --set workload.num_requests=10",
        ),
        (
            ["--request-rate", "8", "--set", "workload.arrival=closed"],
            "--request-rate 8 contradicts --set workload.arrival=closed",
        ),
        (["--goodput", "ttft"], "--goodput: 'ttft': the threshold must be a number of ms"),
        (["--save-detailed"], "--save-detailed: applies to the result file; add --save-result"),
        (["--result-dir", "x"], "--result-dir: applies to the result file; add --save-result"),
        (
            ["--save-result", "--find-capacity"],
            "--save-result: one file per run, and --find-capacity",
        ),
        (
            [
                "--set",
                "workload.max_concurrency=2",
                "--set",
                "workload.arrival=closed",
                "--set",
                "workload.concurrency=2",
            ],
            "workload.max_concurrency: a closed loop's cap is workload.concurrency",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_2_before_anything_starts(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    try:
        rc = cli(["run", str(DEMO_CONFIG), "--results-dir", str(run_dir), *argv])
    except SystemExit as e:  # argparse's own checks (a value of the wrong type)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not run_dir.exists()
