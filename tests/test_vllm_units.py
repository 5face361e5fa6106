"""The vLLM engine's parts that need no server: the command line from the spec, the event-stream
parser on a recorded vLLM stream, the /metrics parser on a recorded vLLM scrape, the histogram
quantile rule and the client-lag statistics against hand-computed values, and the process-tree
keeper (reaper) on a real process tree whose parent is SIGKILLed."""

from __future__ import annotations

import ast
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.engines.openai_server.client import StreamResult, feed_line
from harness.engines.openai_server.scrape import (
    counter_total,
    kept_lines,
    parse_metrics,
    server_view,
    snapshot,
)
from harness.engines.vllm.command import SERVE, server_launch
from harness.engines.vllm.tree import session_members, stop_session
from harness.measure.histogram import bucket_delta, histogram_quantile, window_stats
from harness.measure.metrics import RequestRecord, client_lag
from harness.spec.spec import spec_from_dict
from vllm_server import tiny_config_folder

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def _vllm_spec(tmp_path, **engine):
    folder = tiny_config_folder(tmp_path / "model")
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    raw = {
        "name": "t",
        "model": {"config": str(folder), "dtype": "fp32"},
        "cluster": {"gpu": "cpu", "nodes": 1, "gpus_per_node": 8},
        "parallel": {"tp": 2, "pp": 4, "dp": 1},
        "workload": {"num_requests": 4, "input_len": {"value": 8}, "output_len": {"value": 4}},
        "run": {"max_batch": 6, "max_seq_len": 64, "seed": 3},
        "engine": {"kind": "vllm", "python": str(python), **engine},
    }
    return spec_from_dict(raw)


def test_command_line_carries_the_spec_layout_and_extra_args_last(tmp_path):
    spec = _vllm_spec(
        tmp_path, extra_args=["--max-num-seqs", "2"], env={"VLLM_CPU_KVCACHE_SPACE": 1}, port=8123
    )
    launch = server_launch(spec)
    argv = list(launch.argv)
    flag = {argv[i]: argv[i + 1] for i in range(5, len(argv) - 1) if argv[i].startswith("--")}
    assert argv[:5] == [str(tmp_path / "python"), "-c", SERVE, "serve", str(tmp_path / "model")]
    assert (
        flag["--tensor-parallel-size"],
        flag["--pipeline-parallel-size"],
        flag["--data-parallel-size"],
    ) == ("2", "4", "1")
    assert (flag["--dtype"], flag["--max-model-len"], flag["--seed"], flag["--port"]) == (
        "float32",
        "64",
        "3",
        "8123",
    )
    assert flag["--distributed-executor-backend"] == "mp" and flag["--host"] == "127.0.0.1"
    # a config without weights: dummy weights, and no tokenizer in the folder → token ids only
    assert flag["--load-format"] == "dummy" and "--skip-tokenizer-init" in argv
    assert "--enforce-eager" not in argv
    assert argv[-2:] == [
        "--max-num-seqs",
        "2",
    ]  # after the spec's --max-num-seqs 24 (4 micro-batches × 6): argparse keeps the last
    assert launch.env["VLLM_PP_LAYER_PARTITION"] == "1,1,1,1"
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and launch.env["HF_HUB_OFFLINE"] == "1"
    assert launch.url == "http://127.0.0.1:8123" and launch.model == str(tmp_path / "model")


def test_recorded_vllm_stream_gives_token_ids_and_times():
    lines = [ln.split("\t", 1) for ln in (DATA / "vllm_sse_0.32.txt").read_text().splitlines()[1:]]
    rec = RequestRecord(
        request_id=0, replica=0, arrival_s=0.0, admitted_s=None, first_token_s=None, output_len=6
    )
    out = StreamResult()
    ended = [feed_line(ast.literal_eval(text), rec, out, float(t)) for t, text in lines]
    assert ended.count(True) == 1 and ended[-2] is True  # [DONE] ends it (the last line is blank)
    # EOS (id 2) is a token under ignore_eos even though its text is empty
    assert out.tokens == [202, 369, 232, 144, out.tokens[4], 2] and out.finish_reason == "length"
    assert rec.first_token_s == 0.0962 and len(rec.token_times_s) == 6
    assert rec.finish_s == rec.token_times_s[-1] < 0.5491  # the usage chunk does not count
    assert out.usage == {"prompt_tokens": 5, "total_tokens": 11, "completion_tokens": 6}


def test_error_event_fails_the_request():
    rec = RequestRecord(
        request_id=0, replica=0, arrival_s=0.0, admitted_s=None, first_token_s=None, output_len=4
    )
    out = StreamResult()
    line = (
        'data: {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for '
        "the root "
        'cause.", "type": "InternalServerError", "param": null, "code": 500}}'
    )
    assert feed_line(line, rec, out, 31.1) is True
    assert out.error.startswith("EngineCore encountered an issue") and rec.first_token_s is None


def test_recorded_vllm_metrics_parse_to_the_values_in_the_text():
    text = (DATA / "vllm_metrics_0.32.txt").read_text()
    rows = parse_metrics(text)
    # what the client stores during a run (the kept lines) parses to the same rows, in a third of
    # the text
    kept = kept_lines(text)
    assert parse_metrics(kept) == rows and len(kept) < len(text) / 3
    assert counter_total(kept, "vllm:request_success_total") == 3.0
    snap = snapshot(rows)
    assert snap["counters"]["vllm:generation_tokens_total"] == 96.0
    assert snap["counters"]["vllm:prompt_tokens_total"] == 195.0
    # stop 0 + length 3 + abort 0 + ...
    assert snap["counters"]["vllm:request_success_total"] == 3.0
    ttft = snap["histograms"]["vllm:time_to_first_token_seconds"]
    assert ttft["count"] == 3.0 and ttft["sum"] == pytest.approx(0.8671140670776367)
    assert (
        (0.1, 1.0) in ttft["buckets"]
        and (0.25, 2.0) in ttft["buckets"]
        and ttft["buckets"][-1] == (math.inf, 3.0)
    )
    labels = {r["labels"] for r in rows if r["sample"] == "vllm:request_success_total"}
    assert "engine=0,finished_reason=length" in labels  # model_name dropped
    view = server_view(None, snap, [snap])
    # TTFT p50: rank 1.5 falls in (0.1, 0.25] holding counts 1..2 → 0.1 + 0.15·0.5/1 = 0.175 s
    assert view["ttft"]["p50_ms"] == pytest.approx(175.0)
    assert view["ttft"]["mean_ms"] == pytest.approx(0.8671140670776367 / 3 * 1e3)
    assert view["generation_tokens"] == 96.0 and view["request_success"] == 3.0


def test_histogram_quantile_and_window_by_hand():
    b = [(0.1, 2), (0.5, 6), (1.0, 8), (math.inf, 10)]
    assert histogram_quantile(0.5, b) == pytest.approx(0.4)  # rank 5: 0.1 + 0.4·(5−2)/(6−2)
    # rank 1 in the first bucket: 0 + 0.1·1/2
    assert histogram_quantile(0.1, b) == pytest.approx(0.05)
    assert histogram_quantile(0.99, b) == 1.0  # rank 9.9 in +inf: the largest finite bound
    assert histogram_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    before = {"buckets": [(0.1, 1), (0.5, 1), (1.0, 1), (math.inf, 1)], "sum": 0.05, "count": 1}
    after = {"buckets": b, "sum": 4.05, "count": 10}
    assert bucket_delta(b, before["buckets"]) == [(0.1, 1), (0.5, 5), (1.0, 7), (math.inf, 9)]
    st = window_stats(after, before)
    assert st["count"] == 9 and st["mean"] == pytest.approx(4.0 / 9)
    assert st["p50"] == pytest.approx(0.1 + 0.4 * (4.5 - 1) / (5 - 1))
    assert bucket_delta(before["buckets"], b) is None  # counts went down: a restart


def test_client_lag_by_hand():
    recs = [
        RequestRecord(
            request_id=i, replica=0, arrival_s=a, admitted_s=None, first_token_s=None, sent_s=s
        )
        for i, (a, s) in enumerate([(0.0, 0.001), (1.0, 1.002), (2.0, 2.003), (3.0, 3.010)])
    ]
    recs.append(
        RequestRecord(
            request_id=9,
            replica=0,
            arrival_s=0.0,
            admitted_s=None,
            first_token_s=None,
            sent_s=5.0,
            warmup=True,
        )
    )
    lag = client_lag(recs)
    # lags 1, 2, 3, 10 ms: p50 = 2.5, p99 = 3 + 0.97·7 = 9.79 (numpy linear), max 10
    assert (
        lag["sent"] == 4
        and lag["p50_ms"] == pytest.approx(2.5)
        and lag["p99_ms"] == pytest.approx(9.79)
    )
    assert lag["max_ms"] == pytest.approx(10.0) and "client lag p99 9.8 ms > 5 ms" in lag["warning"]
    assert client_lag(recs[:3])["warning"] is None
    assert client_lag([RequestRecord(0, 0, 0.0, None, None)]) is None
    # request 3 was held by a --max-concurrency cap until 3.009: its lag is 1 ms, its 9 ms wait at
    # the client is the cap's (client queue), not a slow client
    held = client_lag(recs, released_s={3: 3.009})
    assert held["max_ms"] == pytest.approx(3.0) and held["warning"] is None


# A stand-in process tree shaped like vLLM's: a parent that starts grandchildren which ignore
# SIGTERM.
_TREE = (
    "import os, signal, subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(300)'], "
    "stdout=subprocess.PIPE) for _ in range(3)]\n"
    "[k.stdout.readline() for k in kids]\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_stop_session_ends_orphans_that_ignore_sigterm():
    parent = subprocess.Popen(
        [sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        assert len(session_members(parent.pid)) == 4
        # the parent dies: its children are orphaned, still in the session
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait(lambda: len(session_members(parent.pid)) == 3, 5)
        res = stop_session(parent.pid, grace_s=1.0)
        assert res["ended_by"] == "SIGKILL" and session_members(parent.pid) == []
    finally:
        stop_session(parent.pid, grace_s=0.1)


def test_reaper_stops_the_tree_when_its_harness_is_sigkilled(tmp_path):
    # A stand-in for `harness run`: starts the reaper exactly as ServerTree does, then is SIGKILLed.
    prog = (
        "import sys; from harness.engines.vllm.command import ServerLaunch; "
        "from harness.engines.vllm.server import ServerTree; "
        f"t = ServerTree(ServerLaunch((sys.executable, '-c', {_TREE!r}), {{}}, '127.0.0.1', 1, "
        f"'m'), "
        f"{str(tmp_path / 'server.log')!r}, grace_s=1.0).start(); "
        "print(t.pid, t._reaper.pid, flush=True); import time; time.sleep(300)"
    )
    harness = subprocess.Popen(
        [sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    sid = reaper = None
    try:
        sid, reaper = map(int, harness.stdout.readline().split())
        log = tmp_path / "server.log"
        # the children ignore SIGTERM now
        assert _wait(lambda: "ready" in log.read_text().splitlines(), 20)
        assert len(session_members(sid)) == 4
        # outside the server's group
        assert os.getsid(reaper) != sid and os.getpgid(reaper) != os.getpgid(sid)
        harness.kill()
        harness.wait()
        assert _wait(lambda: not session_members(sid), 30), session_members(sid)
        assert _wait(
            lambda: (
                not Path(f"/proc/{reaper}").exists()
                or Path(f"/proc/{reaper}/stat").read_text().split(") ")[1][0] == "Z"
            ),
            10,
        )
        assert log.read_text().startswith("# ")  # the command line heads the log
    finally:
        harness.kill()
        if sid is not None:
            stop_session(sid, grace_s=0.1)


def test_engine_section_validation_names_the_field(tmp_path):
    from harness.errors import UsageError

    base = _vllm_spec(tmp_path).to_dict()
    cases = [
        (
            {"kind": "openai", "url": "http://h:1", "model": "m", "python": "x"},
            "engine.python: only for engine.kind vllm",
        ),
        (
            {"kind": "vllm", "python": base["engine"]["python"], "url": "http://h:1"},
            "engine.url: only for engine.kind openai",
        ),
        (
            {"kind": "openai", "url": "ftp://h", "model": "m"},
            "engine.url: 'ftp://h' is not an http(s) URL",
        ),
        (
            {"kind": "openai", "url": "http://h:1"},
            "engine.model: kind openai needs the served model name",
        ),
        (
            {"kind": "vllm", "python": base["engine"]["python"], "port": 70000},
            "engine.port: 70,000 is beyond the limit of 65,535",
        ),
        ({"kind": "vllm", "python": base["engine"]["python"], "env": {"A": [1]}}, "engine.env.A:"),
    ]
    for engine, msg in cases:
        with pytest.raises(UsageError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            spec_from_dict(dict(base, engine=engine))
    with pytest.raises(UsageError, match="model.preset: vLLM loads a Hugging Face folder"):
        spec_from_dict(
            dict(
                base,
                model={"preset": "tiny", "dtype": "fp32"},
                parallel={"tp": 1, "pp": 1},
                cluster={"gpu": "H100-SXM-80GB", "nodes": 1, "gpus_per_node": 1},
            )
        )
    with pytest.raises(UsageError, match="cluster.nodes: 2 nodes with engine.kind vllm"):
        spec_from_dict(dict(base, cluster={"gpu": "cpu", "nodes": 2, "gpus_per_node": 4}))
    ref = spec_from_dict(dict(base, engine={}))
    assert ref.engine.kind == "reference"  # the default: today's behaviour


def test_cpu_environment_is_chosen_from_the_machine_and_the_plan(tmp_path):
    """#24: vLLM on the CPU needs no env lines; what the harness sets, and why, per machine."""
    from harness.engines.vllm.cpu_env import choose_cpu_env, kv_cache_gib, numa_nodes
    from harness.spec.spec import load_spec

    spec = _vllm_spec(tmp_path)  # TP2-PP4 = 8 workers, 4 layers, 2 KV heads of 64, fp32
    small = choose_cpu_env(spec, cores=2, nodes=1)
    assert {k: c["value"] for k, c in small.items()} == {
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # 24 sequences × 64 tokens × 512 B: under 1 GiB
    }
    assert "8 workers on 1 NUMA node(s) and 2 core(s)" in small["VLLM_CPU_OMP_THREADS_BIND"]["why"]
    big = choose_cpu_env(spec, cores=64, nodes=8)  # a NUMA node per worker: vLLM binds itself
    assert list(big) == ["VLLM_CPU_KVCACHE_SPACE"]
    # the user's value wins, and the launch carries the rest
    launch = server_launch(_vllm_spec(tmp_path, env={"OMP_NUM_THREADS": 4}))
    assert launch.env["OMP_NUM_THREADS"] == "4" and "OMP_NUM_THREADS" not in launch.chosen
    assert all(launch.env[k] == c["value"] for k, c in launch.chosen.items())
    # the KV size is the plan's formula: Llama3-8B TP2-PP8, 4 layers a stage, 4 KV heads of 128
    cpu8b = load_spec(REPO / "configs" / "llama3-8b-tp2-pp8-cpu.yaml")
    per_token = 2 * 4 * (8 // 2) * 128 * cpu8b.dtype_bytes
    want = per_token * cpu8b.micro_batches * cpu8b.run.max_batch * cpu8b.run.max_seq_len
    assert kv_cache_gib(cpu8b) == max(1, math.ceil(want / 2**30))
    # a GPU spec gets nothing
    gpu = load_spec(REPO / "configs" / "llama3-70b-tp2-pp4-h100-vllm.yaml")
    assert choose_cpu_env(gpu) == {}
    assert numa_nodes(tmp_path / "none") == 1 and numa_nodes() >= 1


def test_leftovers_of_another_server_are_not_removed(tmp_path):
    """The cross-run race seen on this host: a server's stop removed a semaphore another server had
    just created for a spawning worker (FileNotFoundError in SemLock._rebuild). Multiprocessing
    names are removed only when this server was seen using them; vLLM's own stay as before."""
    import socket
    import uuid

    from harness.engines.vllm.tree import SHM, leftover_names, paths_used, remove_new_leftovers

    before = leftover_names()
    tag = uuid.uuid4().hex[:8]
    ours, theirs = SHM / f"sem.mp-{tag}a", SHM / f"sem.mp-{tag}b"
    dist = SHM / f"vllm_dist_{tag}"
    for p in (ours, theirs, dist):
        p.write_bytes(b"x")
    try:
        removed = remove_new_leftovers(before, owned={str(ours)})
        assert str(ours) in removed and str(dist) in removed
        assert str(theirs) not in removed and theirs.exists()
    finally:
        for p in (ours, theirs, dist):
            p.unlink(missing_ok=True)
    # what a process uses: its open files and, by inode, its bound UNIX sockets
    path = tmp_path / "held"
    sock_path = str(tmp_path / "s.sock")
    with open(path, "w"), socket.socket(socket.AF_UNIX) as s:
        s.bind(sock_path)
        used = paths_used([os.getpid()])
    assert str(path) in used and sock_path in used
