"""``harness run`` with ``engine.kind: vllm`` launching a real vLLM server (TP1-PP1: the smallest
real server) and the lifetime of its process tree: ``--find-capacity`` with one server for every
probe and a SIGTERM mid-probe → exit 3, completed requests kept and marked incomplete, server gone;
SIGKILL of ``harness run`` itself → nothing of the server is left; a server that dies during
start-up → exit 3 with the last lines of its log, no hang. Bad input → exit 2 with one line, before
anything starts (no server needed).

One server at a time (this machine holds one): each test's server is gone before the next starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.cli import main as cli_main
from harness.engines.vllm.tree import session_members
from vllm_server import REPO, needs_vllm, spec_dict, tiny_checkpoint, wait_for, write_spec

# PP1: --enforce-eager is safe (it hangs only with PP>1) and skips torch.compile at start-up.
VLLM_ENGINE = {"kind": "vllm", "extra_args": ["--enforce-eager"], "start_timeout_s": 400}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("vllm-ckpt") / "tiny-llama")


def _start(config, run_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(config),
            "--results-dir",
            str(run_dir),
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _server_pid(run_dir) -> int | None:
    try:
        return json.loads((run_dir / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _gone(pid: int) -> bool:
    return (
        not os.path.exists(f"/proc/{pid}")
        or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    )


@pytest.mark.slow
@needs_vllm
@pytest.mark.timeout(600)
def test_sigkill_of_harness_leaves_no_server_process(ckpt, tmp_path):
    config = write_spec(tmp_path / "vllm.yaml", spec_dict(ckpt, VLLM_ENGINE, tp=1, pp=1))
    run_dir = tmp_path / "run"
    proc = _start(config, run_dir)
    try:
        # Kill it while the server starts its engine (EngineCore and worker exist): the orphan-prone
        # moment.
        assert wait_for(lambda: _server_pid(run_dir) is not None, 120)
        sid = _server_pid(run_dir)
        reaper = json.loads((run_dir / "server.json").read_text())["reaper_pid"]
        assert wait_for(lambda: len(session_members(sid)) >= 3, 300), session_members(sid)
        assert os.getsid(reaper) != sid and os.getsid(reaper) != os.getsid(proc.pid)
        proc.kill()
        proc.wait()
        assert wait_for(lambda: session_members(sid) == [], 60), session_members(sid)
        assert wait_for(lambda: _gone(reaper), 30)
    finally:
        proc.kill()


@pytest.mark.slow
@needs_vllm
@pytest.mark.timeout(600)
def test_one_server_for_every_capacity_probe_and_sigterm_mid_probe_exits_3(ckpt, tmp_path):
    """--find-capacity launches one server for all probes; a SIGTERM during the second probe ends
    the run with exit 3, that probe's completed requests kept and marked incomplete, the server
    gone. The model is a config-only folder (#27 item 7): dummy weights of its shape, no tokenizer
    (the server takes and returns token ids only), and every request still gets its 16 tokens;
    the server runs with the reference engine's limits and the prefix cache off."""
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(ckpt / "config.json", config_only / "config.json")
    raw = spec_dict(ckpt, VLLM_ENGINE, tp=1, pp=1, num_requests=40, rate_rps=2)
    raw["model"] = {"config": str(config_only), "dtype": "fp32"}
    config = write_spec(tmp_path / "vllm.yaml", raw)
    root = tmp_path / "cap"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(config),
            "--results-dir",
            str(root),
            "--find-capacity",
            "--probes",
            "3",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = root / "probe-01"
    try:

        def some_done() -> bool:
            p = second / "requests.parquet"
            return p.exists() and pd.read_parquet(p).query("not warmup")["completed"].sum() >= 3

        assert wait_for(some_done, 480, every=0.5), (
            proc.stderr.read() if proc.poll() is not None else "no requests"
        )
        sid = _server_pid(root)
        assert len(session_members(sid)) >= 2  # API server, EngineCore, worker
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
        stop_s = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 3, err[-3000:]
    assert "stopping: received SIGTERM" in err and stop_s < 60
    assert err.count("vLLM server starting") == 1  # one launch for every probe
    first = json.loads((root / "probe-00" / "summary.json").read_text())
    s = json.loads((second / "summary.json").read_text())
    assert first["complete"] is True and first["metrics"]["completed"] == 40
    assert (
        s["complete"] is False
        and s["verdict"] == "INCOMPLETE"
        and s["incomplete_reason"] == "received SIGTERM"
    )
    assert s["engine"]["command"] == first["engine"]["command"]  # the same server
    req = pd.read_parquet(second / "requests.parquet").query("not warmup")
    done = req[req["completed"]]
    assert len(done) >= 3 and s["metrics"]["completed"] == len(done) < 40
    assert (done["token_times_s"].map(len) == 16).all()
    assert not (root / "probe-02").exists()
    assert session_members(sid) == []  # the whole tree is gone
    server = json.loads((root / "server.json").read_text())
    assert server["stopped"]["left"] == [] and server["stopped"]["ended_by"] in (
        "SIGTERM",
        "SIGKILL",
    )
    assert "--tensor-parallel-size 1" in s["engine"]["command"]
    command = first["engine"]["command"]
    assert "--load-format dummy" in command and "--skip-tokenizer-init" in command
    assert "--max-num-seqs 8 --max-num-batched-tokens 2048 --no-enable-prefix-caching" in command
    assert (first["engine"]["max_num_seqs"], first["engine"]["prefix_caching"]) == (8, False)
    assert first["server_metrics"]["prefix_cache_hits"] == 0
    assert first["hardware"]["gpu"] == "cpu" and not first["engine"]["gpus"]
    assert (root / "server.log").read_text().startswith("# ")
    # no env in the spec: the harness chose vLLM-CPU's values (2 workers on this 2-core machine)
    chosen = first["engine"]["env_chosen"]
    assert chosen["VLLM_CPU_KVCACHE_SPACE"]["value"] == "1"
    assert all(f"{k}={c['value']}" in first["engine"]["command"] for k, c in chosen.items())


@pytest.mark.slow
@needs_vllm
@pytest.mark.timeout(600)
def test_server_dying_during_start_up_exits_3_with_its_log(ckpt, tmp_path):
    # A real start-up failure: a context longer than the checkpoint's 512 positions.
    engine = dict(VLLM_ENGINE, extra_args=["--enforce-eager", "--max-model-len", "4096"])
    config = write_spec(tmp_path / "vllm.yaml", spec_dict(ckpt, engine, tp=1, pp=1))
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(config),
            "--results-dir",
            str(run_dir),
            "--no-report",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert res.returncode == 3, res.stderr[-3000:]
    assert time.monotonic() - t0 < 400  # well within engine.start_timeout_s
    assert "exited with code 1 during start-up" in res.stderr
    # its log's tail
    assert "max_model_len (4096) is greater than the derived max_model_len" in res.stderr
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["complete"] is False and "during start-up" in s["incomplete_reason"]
    assert session_members(_server_pid(run_dir)) == []


def _bad(tmp_path, capsys, d: dict, *extra: str) -> str:
    config = write_spec(tmp_path / "bad.yaml", d)
    capsys.readouterr()  # drop what came before (progress bars)
    rc = cli_main(["run", str(config), "--results-dir", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing written, nothing started
    return err


def test_bad_engine_input_is_one_line_exit_2(ckpt, tmp_path, capsys):
    base = spec_dict(ckpt, dict(VLLM_ENGINE, python=str(sys.executable)), tp=1, pp=1)
    assert "engine.kind: 'sglang' is not allowed" in _bad(
        tmp_path, capsys, dict(base, engine={"kind": "sglang"})
    )
    missing = dict(base, engine=dict(VLLM_ENGINE, python=str(tmp_path / "no-such" / "python")))
    assert f"engine.python: {tmp_path / 'no-such' / 'python'} is not an executable file" in _bad(
        tmp_path, capsys, missing
    )
    # an interpreter without vllm (this test's own): found by looking, before any server starts
    assert f"engine.python: {sys.executable} has no vllm package" in _bad(tmp_path, capsys, base)
    gone = dict(base, model={"checkpoint": str(tmp_path / "no-ckpt"), "dtype": "fp32"})
    assert _bad(tmp_path, capsys, gone).startswith(
        f"harness run: error: model.checkpoint: {tmp_path / 'no-ckpt'}"
    )
    assert "engine.url:" in _bad(
        tmp_path, capsys, dict(base, engine={"kind": "openai", "model": "m"})
    )
    dead = dict(base, engine={"kind": "openai", "url": "http://127.0.0.1:9", "model": "m"})
    assert "engine.url: nothing answers GET http://127.0.0.1:9/v1/models" in _bad(
        tmp_path, capsys, dead
    )


def test_head_dim_16_is_refused_before_launch_on_cpu(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "hd16", hidden=64)  # 4 heads of 16
    d = spec_dict(ckpt, dict(VLLM_ENGINE, python=str(sys.executable)), tp=1, pp=1)
    err = _bad(tmp_path, capsys, d)
    assert "model: head_dim 16 is not supported by vLLM's CPU attention" in err
