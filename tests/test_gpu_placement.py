"""parallel.gpu_map is per node (local rank -> CUDA device on every node): checked with two real
torchrun agents on 127.0.0.1 ("nodes" of 2 ranks each), where LOCAL_RANK and the global rank differ;
and NVML samples exactly the GPU a rank uses (by its CUDA UUID), against a fake NVML."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness import cli
from harness.engines.reference import dist as hdist
from harness.engines.reference import worker
from harness.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
GPU_MAP = [1, 0]


def _spec(tmp_path: Path, **parallel) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "tiny-tp2-pp4-cpu.yaml").read_text())
    raw["cluster"] = {"gpu": "cpu", "nodes": 2, "gpus_per_node": 2}
    raw["parallel"] = {"tp": 2, "pp": 2, "dp": 1, **parallel}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_agents_each_local_rank_gets_its_mapped_device(tmp_path):
    spec = _spec(tmp_path, gpu_map=GPU_MAP)
    out = tmp_path / "out"
    out.mkdir()
    endpoint = f"127.0.0.1:{_free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=2",
        "--max-restarts=0",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        "--rdzv-id=placement",
        str(REPO / "tests" / "placement_worker.py"),
        str(spec),
        str(out),
    ]
    agents = [
        subprocess.Popen(
            cmd,
            cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        logs = [a.communicate(timeout=240)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    assert [a.returncode for a in agents] == [0, 0], "\n".join(x[-2000:] for x in logs)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]
    for r in ranks:
        node, local = divmod(r["rank"], 2)
        # torchrun gives each agent a contiguous block; the harness agrees on the node everywhere
        assert (r["node"], r["local_rank"]) == (node, local) and r["planned_node"] == node
        # the map is indexed by the local rank: global ranks 2 and 3 (node 1) get devices 1 and 0
        assert r["device"] == GPU_MAP[local]
        assert r["dag_label"] == f"node{node}/gpu{GPU_MAP[local]}"
    assert [r["device"] for r in ranks] == [1, 0, 1, 0]


def test_gpu_map_is_validated_per_node(tmp_path, capsys):
    # the old meaning (a permutation of the global ranks) is refused, naming the per-node rule
    rc = cli.main(["plan", str(_spec(tmp_path, gpu_map=[0, 1, 2, 3]))])
    err = capsys.readouterr().err
    assert rc == 2 and "permutation of 0..1 (cluster.gpus_per_node)" in err and err.count("\n") == 1
    env = hdist.LaunchEnv(
        rank=3, world_size=4, local_rank=1, local_world_size=3, master_addr=None, in_torchrun=True
    )
    with pytest.raises(UsageError, match="2 entries but this node runs 3 ranks"):
        hdist.device_index(env, GPU_MAP)


def test_claimed_tp_groups_are_numbered_node_by_node(tmp_path):
    from harness.verdicts.claims import load_claims, verify

    claims = tmp_path / "c.yaml"
    claims.write_text(
        f"config: {_spec(tmp_path, gpu_map=GPU_MAP).name}\nclaims:\n  tp_group_gpus: {{1: [2, "
        f"3]}}\n"
    )
    v = verify(load_claims(claims)).claims[0]
    assert v.verdict == "CONFIRMED" and v.expected == [
        3,
        2,
    ]  # ranks 2, 3 on node 1: devices 1, 0 there


def test_each_cuda_rank_samples_only_its_own_gpu(monkeypatch):
    from test_nvml import FakeNvml, _defaults, run_passes

    fake = FakeNvml(4, **_defaults()).install(monkeypatch)
    monkeypatch.setattr(hdist, "device_uuid", lambda device: f"GPU-fake-{device.index}")
    rows = run_passes(worker.telemetry_sampler(torch.device("cuda", 2), 0, 60.0), extra=1)
    assert [r["device"] for r in rows] == [2, 2, 2]
    assert {dev for (name, dev) in fake.pos if not name.startswith("gpm")} == {
        2
    }  # no other GPU read
    # a CPU rank uses no GPU: only local rank 0 samples, and it samples its own process
    assert worker.telemetry_sampler(torch.device("cpu"), 1, 60.0) is None
    host = worker.telemetry_sampler(torch.device("cpu"), 0, 60.0)
    calls = fake.calls["nvmlInit"]
    rows = run_passes(host, extra=0)
    assert host.note == "NVML unavailable: this process uses no GPU" and {
        r["device"] for r in rows
    } == {-1}
    assert fake.calls["nvmlInit"] == calls  # NVML not even opened
