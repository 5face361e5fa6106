"""Run until decided and repeats against a real vLLM server (the session's shared one:
tests/conftest.py ``vllm_server``), driven as ``engine.kind: openai``: the client stops sending
once every SLO is decided and awaits those in flight; ``--repeats`` drives the same server once per
run and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from demo_run import assert_verdict_exit
from vllm_server import REPO, needs_vllm, spec_dict, write_spec

pytestmark = [needs_vllm, pytest.mark.slow, pytest.mark.timeout(600)]


def _run(config, run_dir, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(run_dir)]
    return subprocess.run(
        [*cmd, "--no-report", *flags], cwd=REPO, capture_output=True, text=True, timeout=400
    )


def _spec(vllm_ckpt, vllm_server, path, targets, **workload):
    engine = {"kind": "openai", "url": vllm_server["url"], "model": vllm_server["model"]}
    d = spec_dict(vllm_ckpt, engine, **workload)
    d["slo"] = {"targets": targets}
    return write_spec(path, d)


def test_the_client_stops_sending_once_decided_and_repeats_reuse_the_server(
    vllm_ckpt, vllm_server, tmp_path
):
    config = _spec(
        vllm_ckpt, vllm_server, tmp_path / "easy.yaml", ["mean_e2el_ms <= 60000"], rate_rps=8
    )
    res = _run(config, tmp_path / "easy", "--until-decided", "--max-requests", "120")
    s = assert_verdict_exit(res.returncode, tmp_path / "easy", res.stderr)
    seq = s["sequential"]
    assert res.returncode == 0 and seq["stopped"] == "decided" and seq["final"]["n"] == 16
    assert 16 <= seq["requests_served"] < 60 and s["metrics"]["completed"] == seq["requests_served"]
    # two repeats of 4 requests on the same server
    config = _spec(
        vllm_ckpt,
        vllm_server,
        tmp_path / "rep.yaml",
        ["request_throughput >= 0.01"],
        num_requests=4,
    )
    res = _run(config, tmp_path / "rep", "--repeats", "2")
    doc = json.loads((tmp_path / "rep" / "repeats.json").read_text())
    assert doc["complete_runs"] == 2 and doc["served_by"].startswith("the given server")
    assert doc["slo"][0]["per_run"] == ["PASS", "PASS"], res.stderr[-2000:]
