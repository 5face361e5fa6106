"""``harness import-bench`` of the peer tools' own result files (tests/fixtures/, made by
benchmarks/peer_fixtures.py with the real tools against a real vLLM-CPU server, TP1, the tiny Llama:
24 requests of 32 tokens in / 16 out):

* aiperf/poisson: AIPerf 0.13.0, Poisson 4 req/s, its token counts re-tokenized by the client;
* aiperf/server_count: AIPerf at concurrency 4 with --use-server-token-count;
* guidellm/poisson: guidellm 0.8.1, Poisson 4 req/s;
* loadgen/server, loadgen/offline: MLPerf LoadGen 6.0.17 through harness.engines.loadgen.

Each import must reproduce every number of the tool's own summary whose definition is ours, and
reproduce by the tool's formula, from the same records, every number defined otherwise; the format
is detected from the files alone. Bad inputs are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main as cli
from harness.results.reader import load_run

FIX = Path(__file__).parent / "fixtures"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml"
CASES = {
    "aiperf-poisson": (FIX / "aiperf" / "poisson", "aiperf"),
    "aiperf-file": (FIX / "aiperf" / "poisson" / "profile_export.jsonl", "aiperf"),
    "aiperf-server-count": (FIX / "aiperf" / "server_count", "aiperf"),
    "guidellm": (FIX / "guidellm" / "poisson" / "benchmarks.json", "guidellm"),
    "loadgen-server": (FIX / "loadgen" / "server" / "mlperf_log_detail.txt", "loadgen"),
    "loadgen-offline": (FIX / "loadgen" / "offline", "loadgen"),
    "vllm": (FIX / "vllm_bench" / "poisson.json", "vllm"),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    for name, (path, _) in CASES.items():
        assert cli(["import-bench", str(path), str(root / name), "--config", str(CONFIG)]) == 0
    return root


def test_the_peers_percentiles_by_hand():
    from harness.measure.percentiles import (
        inverse_cdf_percentile,
        lower_rank_percentile,
        percentile,
    )

    xs = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    # LoadGen: sorted[⌊N·p⌋] → p50: index 3, p90: index ⌊5.4⌋ = 5, p99: index 5
    assert [lower_rank_percentile(xs, q) for q in (50, 90, 99)] == [40.0, 60.0, 60.0]
    # guidellm: first value whose cumulative share (k/6) reaches p → p50: 3/6 → 30; p90: 60
    assert [inverse_cdf_percentile(xs, q) for q in (50, 90)] == [30.0, 60.0]
    assert inverse_cdf_percentile([5.0, 5.0, 7.0], 60) == 5.0  # equal values merged: 2/3 ≥ 0.6
    assert percentile(xs, 50) == 35.0  # ours (numpy's): between the two
    assert lower_rank_percentile([], 50) is None and inverse_cdf_percentile([], 50) is None


def _engine(imported, name) -> dict:
    return load_run(imported / name).summary["engine"]


@pytest.mark.parametrize("name", list(CASES))
def test_format_detected_and_every_number_reproduced(imported, name):
    eng = _engine(imported, name)
    assert eng["format"] == CASES[name][1]
    assert eng["unreproduced"] == []
    rows = eng["comparisons"]
    assert all(r["reproduced"] is not False for r in rows)
    assert sum(1 for r in rows if r["reproduced"]) >= 8, [r["tool_key"] for r in rows]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_aiperf_names_map_onto_ours(imported):
    """AIPerf's time_to_first_token/request_latency/inter_chunk_latency are our TTFT/E2EL/ITL;
    its inter_token_latency is vLLM's TPOT; the server's usage counts win."""
    src = FIX / "aiperf" / "server_count"
    own = json.loads((src / "profile_export_aiperf.json").read_text())
    run = load_run(imported / "aiperf-server-count")
    m = run.summary["metrics"]
    for tool, ours in (
        ("time_to_first_token", "ttft"),
        ("request_latency", "e2el"),
        ("inter_token_latency", "tpot"),
    ):
        assert m[f"p99_{ours}_ms"] == pytest.approx(own[tool]["p99"], rel=1e-9), tool
        assert m[f"mean_{ours}_ms"] == pytest.approx(own[tool]["avg"], rel=1e-9), tool
    rows = _jsonl(src / "profile_export.jsonl")
    # inter_chunk_latency: AIPerf keeps 0 ms gaps for chunks read together; our ITL merges them
    gaps = [g for r in rows for g in r["metrics"]["inter_chunk_latency"]["value"]]
    nonzero = [g for g in gaps if g != 0]
    assert 0 < len(nonzero) < len(gaps)
    assert m["mean_itl_ms"] == pytest.approx(sum(nonzero) / len(nonzero), rel=1e-9)
    row = next(
        r
        for r in run.summary["engine"]["comparisons"]
        if r["tool_key"] == "inter_chunk_latency.avg"
    )
    assert row["same"] is False and row["reproduced"] is True
    assert row["theirs_recomputed"] == pytest.approx(own["inter_chunk_latency"]["avg"], rel=1e-9)
    server = sum(r["metrics"]["usage_completion_tokens"]["value"] for r in rows)
    assert m["total_output_tokens"] == server == own["total_output_tokens"]["avg"]
    assert m["completed"] == len(rows) == 24


def test_aiperf_client_token_count_disagreement_is_shown(imported):
    src = FIX / "aiperf" / "poisson" / "profile_export.jsonl"
    rows = _jsonl(src)
    server = sum(r["metrics"]["usage_completion_tokens"]["value"] for r in rows)
    client = sum(r["metrics"]["output_token_count"]["value"] for r in rows)
    run = load_run(imported / "aiperf-poisson")
    eng = run.summary["engine"]
    tc = eng["token_counts"]
    assert (tc["server"], tc["client"], tc["requests"]) == (server, client, 24)
    assert run.summary["metrics"]["total_output_tokens"] == server
    if server != client:  # the fixture's word-level tokenizer re-tokenizes the text differently
        itl = {r["tool_key"]: r for r in eng["comparisons"]}["inter_token_latency.avg"]
        assert itl["same"] is False and itl["reproduced"] is True
        assert itl["ours"] != pytest.approx(itl["theirs"], rel=1e-3)
        assert any("re-tokenizing" in n for n in run.summary["notes"])


def test_guidellm_definitions(imported):
    eng = _engine(imported, "guidellm")
    by = {r["tool_key"]: r for r in eng["comparisons"]}
    assert by["inter_token_latency_ms.mean"]["same"] and by["inter_token_latency_ms.mean"][
        "key"
    ] == ("mean_tpot_ms")
    tpot = by["time_per_output_token_ms.mean"]
    assert not tpot["same"] and "TTFT included" in tpot["definition"] and tpot["reproduced"]
    assert "cumulative share" in by["time_to_first_token_ms.p50"]["definition"]


def test_loadgen_verdict_and_percentiles(imported):
    run = load_run(imported / "loadgen-server")
    eng = run.summary["engine"]
    assert eng["scenario"] == "Server" and eng["loadgen"]["result_validity"] in ("VALID", "INVALID")
    assert eng["loadgen_verdict"]["validity"] == eng["loadgen"]["result_validity"]
    assert eng["latency_origin"] == "arrival"
    by = {r["tool_key"]: r for r in eng["comparisons"]}
    p99 = by["result_first_token_99.00_percentile_latency_ns"]
    assert p99["reproduced"] and p99["key"] == "p99_ttft_ms"
    assert by["result_completed_samples_per_sec"]["reproduced"]
    off = _engine(imported, "loadgen-offline")
    assert off["scenario"] == "Offline" and off["loadgen"]["result_validity"] == "VALID"


@pytest.mark.parametrize("scenario", ["server", "offline"])
def test_our_client_agrees_with_loadgen_on_the_same_vllm_requests(scenario):
    """The harness's own records of the LoadGen run against the vLLM server (its clock) and
    LoadGen's (its log): TTFT p50/p90/p99 and TPOT p50/p99 within 1 % or 1 ms."""
    from harness.measure.metrics import RequestRecord, summarize
    from harness.results.imports import loadgen

    folder = FIX / "loadgen" / scenario
    ours = [
        RequestRecord.from_dict(d)
        for d in json.loads((folder / "harness_records.json").read_text())
    ]
    mine, theirs = summarize(ours), summarize(loadgen.read(folder).records)
    assert mine["completed"] == theirs["completed"] == len(ours)
    assert mine["total_output_tokens"] == theirs["total_output_tokens"]  # n_tokens as sent
    for key in ("p50_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_tpot_ms"):
        assert abs(mine[key] - theirs[key]) <= max(1.0, 0.01 * theirs[key]), key


def test_report_names_every_definition_that_differs(imported):
    assert cli(["report", str(imported / "aiperf-poisson")]) == 0
    md = (imported / "aiperf-poisson" / "report.md").read_text()
    assert "## Imported results" in md and "request_throughput" in md
    assert "phase window" in md


def test_loadgen_log_alone_keeps_its_numbers_unchecked(tmp_path):
    (tmp_path / "lg").mkdir()
    shutil.copy(FIX / "loadgen" / "server" / "mlperf_log_detail.txt", tmp_path / "lg")
    assert (
        cli(["import-bench", str(tmp_path / "lg"), str(tmp_path / "run"), "--config", str(CONFIG)])
        == 0
    )
    run = load_run(tmp_path / "run")
    rows = run.summary["engine"]["comparisons"]
    assert run.summary["metrics"]["completed"] == 0 and len(rows) >= 15
    assert (
        all(r["reproduced"] is None for r in rows) and run.summary["engine"]["unreproduced"] == []
    )
    assert any("no mlperf_log_trace.json" in n for n in run.summary["notes"])


# ---------------------------------------------------------------- bad input


def _fails(tmp_path, capsys, src: Path, message: str) -> None:
    capsys.readouterr()
    out = tmp_path / "out"
    assert cli(["import-bench", str(src), str(out), "--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_none_of_the_formats(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    _fails(tmp_path, capsys, tmp_path / "notes.txt", "none of the formats it reads")
    (tmp_path / "empty").mkdir()
    _fails(tmp_path, capsys, tmp_path / "empty", "none of the formats it reads")
    (tmp_path / "other.json").write_text(json.dumps({"model": "x"}))
    _fails(tmp_path, capsys, tmp_path / "other.json", "not a vllm bench serve result")


def test_truncated_aiperf_jsonl(tmp_path, capsys):
    src = FIX / "aiperf" / "poisson" / "profile_export.jsonl"
    text = src.read_text()
    cut = tmp_path / "profile_export.jsonl"
    cut.write_text(text[: len(text) // 2])  # mid-line
    n = text[: len(text) // 2].count("\n") + 1
    _fails(tmp_path, capsys, cut, f"line {n} is not JSON")


def test_loadgen_log_without_result_line(tmp_path, capsys):
    src = FIX / "loadgen" / "server"
    dst = tmp_path / "lg"
    shutil.copytree(src, dst)
    detail = dst / "mlperf_log_detail.txt"
    keep = [ln for ln in detail.read_text().splitlines() if '"key": "result_' not in ln]
    detail.write_text("\n".join(keep) + "\n")
    _fails(tmp_path, capsys, detail, "no result line (result_validity)")


def test_missing_tokenizer_path_stops_the_peer_benchmark_before_anything(tmp_path):
    """AIPerf counts tokens with a local tokenizer folder: a missing one is one line, exit 2, before
    a checkpoint, a server or an output folder exists."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench"
    p = subprocess.run(
        [
            sys.executable,
            str(repo / "benchmarks" / "client_vs_vllm_bench.py"),
            "--clients",
            "harness,aiperf",
            "--tokenizer",
            str(tmp_path / "no-such-tokenizer"),
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert "--tokenizer" in p.stderr and "no tokenizer folder" in p.stderr
    assert p.stderr.count("\n") == 1
    assert not out.exists() and not (tmp_path / "ckpt").exists()


def test_existing_run_is_never_overwritten(imported, tmp_path):
    done = tmp_path / "done"
    assert cli(["import-bench", str(CASES["guidellm"][0]), str(done), "--config", str(CONFIG)]) == 0
    before = (done / "summary.json").read_bytes()
    assert cli(["import-bench", str(CASES["aiperf-poisson"][0]), str(done)]) == 2
    assert (done / "summary.json").read_bytes() == before
