"""The vLLM engine (``kind: vllm``): the OpenAI-compatible server engine
(``harness.engines.openai_server.engine``) with a vLLM server the harness launches with the spec's
layout and whose whole process tree it stops afterwards.

A launched server's command line goes to ``server.json`` and the top of ``server.log`` (its whole
output) in the run directory; a server shared by several runs (``--find-capacity``) is started once
by the caller (``launch_server``, ``bring_up``) and passed in, and the caller stops it
(``stop_and_record``). A server that dies or never becomes ready ends the run incomplete with the
last lines of its log.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from harness.engines.openai_server.driver import Target
from harness.engines.openai_server.engine import OpenAIServerEngine
from harness.engines.openai_server.readiness import ServerInfo, wait_ready
from harness.engines.vllm.command import server_launch
from harness.engines.vllm.profile import profiled_window, traced, window_prefix
from harness.engines.vllm.server import ServerTree
from harness.engines.vllm.telemetry import start_sampler
from harness.engines.vllm.trace_result import add_trace
from harness.results.atomic import atomic_write_json


def launch_server(spec, log_dir: Path) -> ServerTree:
    """Start (not wait for) the server of ``spec``; its log and server.json go to ``log_dir``."""
    launch = server_launch(spec, profile_dir=log_dir)
    server = ServerTree(launch, Path(log_dir) / "server.log").start()
    atomic_write_json(Path(log_dir) / "server.json", server.info())
    print(
        f"harness run: vLLM server starting (pid {server.pid}, {server.launch.url}); log: "
        f"{server.log_path}",
        file=sys.stderr,
        flush=True,
    )
    return server


async def bring_up(spec, server: ServerTree, stop: asyncio.Event) -> ServerInfo:
    """Wait until the launched ``server`` is ready (engine.start_timeout_s) and describe it."""
    async with aiohttp.ClientSession() as session:
        info = await wait_ready(
            session, server.launch.url, spec.engine.start_timeout_s, stop, server, server.started_at
        )
    print(
        f"harness run: vLLM {info.version} ready after {info.ready_s:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return info


def stop_and_record(server: ServerTree, log_dir: Path) -> dict:
    """Stop the server's tree and add how it ended to server.json; warn when anything was left."""
    stopped = server.stop()
    atomic_write_json(Path(log_dir) / "server.json", {**server.info(), "stopped": stopped})
    if stopped.get("left"):
        print(
            f"harness run: WARNING: vLLM processes still alive after the stop: {stopped['left']}",
            file=sys.stderr,
            flush=True,
        )
    return stopped


class VllmEngine(OpenAIServerEngine):
    """``server``/``info``: a launched server shared with other runs (the caller stops it); without
    it the engine launches its own and stops it in ``close``."""

    kind = "vllm"

    def __init__(
        self,
        run_dir: str | Path,
        signals,
        server: ServerTree | None = None,
        info: ServerInfo | None = None,
        loadgen=None,
    ):
        super().__init__(run_dir, signals, info, loadgen)
        self.server = server
        self.owns_server = server is None
        self.stopped: dict | None = None
        self.window: dict | None = None  # the profiled window (run.instrument timing/counts)

    async def _bring_up(self, spec, stop: asyncio.Event) -> Target:
        if self.server is None:
            self.server = launch_server(spec, self.run_dir)
        if self.info is None:
            self.info = await bring_up(spec, self.server, stop)
        return Target(self.server.launch.url, self.server.launch.model)

    def _before_measure(self, spec):
        """vLLM's profiled window (``harness.engines.vllm.profile``) when the run is traced."""
        if not traced(spec):
            return None
        if self.server is None or self.server.launch.profile_dir is None:
            self.window = {"error": "the server was launched without --profiler-config"}
            return None
        prefix = window_prefix(self.run_dir)

        async def window(driver) -> None:
            self.window = await profiled_window(
                driver.session, driver.target, driver.trace, driver.clock, prefix
            )

        return window

    def serve(self, spec, trace, writer):
        result = super().serve(spec, trace, writer)
        if traced(spec):
            add_trace(result, spec, self.run_dir, self.window, self.server)
        return result

    def _start_sampler(self, spec, clock):
        gpus = self.server.launch.settings.get("gpus")
        return start_sampler(self.server.pid, spec.run.nvml_interval_s, clock, gpus)

    def _command(self) -> str | None:
        return self.server.launch.command_text() if self.server is not None else None

    def _facts(self) -> dict:
        if self.server is None:
            return {}
        return {**self.server.launch.settings, "env_chosen": dict(self.server.launch.chosen)}

    def close(self, failed: bool) -> None:
        if not self.owns_server or self.server is None:
            return
        self.stopped = stop_and_record(self.server, self.run_dir)
