"""The profiled window end to end without vLLM: ``VllmEngine`` against a small stand-in server
(aiohttp, in a thread) that streams token ids, answers /start_profile and /stop_profile, and on
the stop writes synthetic gloo worker traces (tests/vllm_synthetic.py) under the prefix it was
given. Checks the window's place (after the warm-up, before the measured window: its requests
are no records), its record, the collection into RUN/vllm-trace and the tables and summary."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from aiohttp import web

from harness.engines.openai_server.readiness import ServerInfo
from harness.engines.openai_server.stopping import StopSignals
from harness.engines.serving import serve_trace
from harness.engines.vllm.command import ServerLaunch
from harness.engines.vllm.engine import VllmEngine
from harness.engines.vllm.profile import PROFILE_ID_BASE, TRACE_DIR
from harness.spec.spec import load_spec
from vllm_server import spec_dict, write_spec
from vllm_synthetic import write_world


class StandIn:
    def __init__(self, trace_dir: Path, spec):
        self.trace_dir, self.spec, self.calls, self.prompts = trace_dir, spec, [], []
        self.prefix = None

    async def completions(self, request):
        body = await request.json()
        self.calls.append(("completion", time.monotonic()))
        self.prompts.append(body["prompt"])
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            chunk = {"choices": [{"index": 0, "text": "x", "token_ids": [i + 1]}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.002)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def start(self, request):
        self.prefix = (await request.json())["profile_prefix"]
        self.calls.append(("start_profile", time.monotonic()))
        return web.Response()

    async def stop(self, request):
        lay, sh = self.spec.layout, self.spec.shape
        write_world(
            self.trace_dir,
            "gloo",
            tp=lay.tp,
            pp=lay.pp,
            layers=lay.layer_split,
            hidden=sh.hidden,
            vocab=sh.vocab,
            prefix=self.prefix,
        )
        self.calls.append(("stop_profile", time.monotonic()))
        return web.Response()

    def serve(self):
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/start_profile", self.start)
        app.router.add_post("/stop_profile", self.stop)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.loop = loop
        threading.Thread(target=loop.run_forever, daemon=True).start()
        return self


def _spec(ckpt, tmp_path, **run):
    d = spec_dict(ckpt, {"kind": "vllm", "python": sys.executable}, num_requests=6, rate_rps=50)
    d["run"].update(warmup_requests=2, **run)
    return load_spec(write_spec(tmp_path / "spec.yaml", d))


def test_window_runs_between_warmup_and_measured_window(vllm_ckpt, tmp_path):
    spec = _spec(vllm_ckpt, tmp_path)
    server_dir = tmp_path / "server"
    stand = StandIn(server_dir / TRACE_DIR, spec).serve()
    launch = ServerLaunch(
        ("stand-in",), {}, "127.0.0.1", stand.port, "m", profile_dir=str(server_dir / TRACE_DIR)
    )
    tree = SimpleNamespace(launch=launch, pid=None, running=True)
    run = tmp_path / "run"
    try:
        with StopSignals() as signals:
            engine = VllmEngine(run, signals, tree, ServerInfo(None, "0.32.0", ["m"]))
            assert serve_trace(engine, spec, run, True) == 0
    finally:
        stand.loop.call_soon_threadsafe(stand.loop.stop)
    kinds = [k for k, _ in stand.calls]
    # 2 warm-up requests, start, 4 window requests, stop, then the 6 measured ones
    assert (
        kinds
        == ["completion"] * 2
        + ["start_profile"]
        + ["completion"] * 4
        + ["stop_profile"]
        + ["completion"] * 6
    )
    s = json.loads((run / "summary.json").read_text())
    w = s["vllm_trace"]["window"]
    assert w["requests"] == 4 and w["error"] is None and w["prefix"] == stand.prefix
    assert w["output_tokens"] == sum(r.output_len for r in load_trace_first(spec, 4))
    req = pd.read_parquet(run / "requests.parquet")
    assert len(req) == 8 and (req["request_id"] < PROFILE_ID_BASE).all()  # no window records
    assert len(list((run / TRACE_DIR).glob(f"{stand.prefix}_*.pt.trace.json.gz"))) == 8
    assert list((server_dir / TRACE_DIR).glob("*.gz")) == []  # moved, not copied
    assert s["measured"]["tp_allreduce_bytes_per_layer"] == 2 * spec.shape.hidden * 4
    assert {"comm.parquet", "stages.parquet"} <= {p.name for p in run.iterdir()}
    assert all(c["ok"] for c in s["cross_checks"] if c["name"].startswith("vllm"))


def load_trace_first(spec, n):
    from harness.spec.workload import build_trace

    return build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len or 128).requests[:n]


@pytest.mark.parametrize("mode", ["off"])
def test_instrument_off_runs_no_window(vllm_ckpt, tmp_path, mode):
    spec = _spec(vllm_ckpt, tmp_path, instrument=mode)
    stand = StandIn(tmp_path / TRACE_DIR, spec).serve()
    launch = ServerLaunch(("stand-in",), {}, "127.0.0.1", stand.port, "m", profile_dir=None)
    try:
        with StopSignals() as signals:
            engine = VllmEngine(
                tmp_path / "run",
                signals,
                SimpleNamespace(launch=launch, pid=None, running=True),
                ServerInfo(None, "0.32.0", ["m"]),
            )
            assert serve_trace(engine, spec, tmp_path / "run", True) == 0
    finally:
        stand.loop.call_soon_threadsafe(stand.loop.stop)
    assert [k for k, _ in stand.calls] == ["completion"] * 8
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "vllm_trace" not in s and not (tmp_path / "run" / "comm.parquet").exists()
