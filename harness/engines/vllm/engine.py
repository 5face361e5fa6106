"""The external engines behind the seam: ``vllm`` (the harness launches a vLLM server with the
spec's layout and stops its whole tree afterwards) and ``openai`` (a server someone else runs).

Both run in the ``harness run`` process itself, in one asyncio loop: bring the server up (launch
and wait for readiness, or check the given one), then ``Driver`` serves the trace, then
``external_result`` turns it into the common result. A launched server's command line goes to
``server.json`` and the top of ``server.log`` (its whole output) in the run directory; a server
shared by several runs (``--find-capacity``) is started once by the caller and passed in.
Failure: a server that dies or never becomes ready, a stop signal or ``run.timeout_s`` end the
run incomplete (exit 3) with the reason — for a server, the last lines of its log.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from harness.engines.base import EngineResult
from harness.engines.vllm.command import server_launch
from harness.engines.vllm.driver import Drive, Driver, Target
from harness.engines.vllm.readiness import ServerFailed, ServerInfo, describe, wait_ready
from harness.engines.vllm.result import external_result, hostname
from harness.engines.vllm.server import ServerTree
from harness.engines.vllm.telemetry import start_sampler
from harness.results.atomic import atomic_write_json


def launch_server(spec, log_dir: Path) -> ServerTree:
    """Start (not wait for) the server of ``spec``; its log and server.json go to ``log_dir``."""
    server = ServerTree(server_launch(spec), Path(log_dir) / "server.log").start()
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


class ExternalEngine:
    """``kind`` vllm or openai. ``server``/``info``: a launched server shared with other runs (the
    caller stops it); without it a vllm engine launches its own and stops it in ``close``."""

    def __init__(
        self,
        kind: str,
        run_dir: str | Path,
        signals,
        server: ServerTree | None = None,
        info: ServerInfo | None = None,
    ):
        self.kind, self.run_dir, self.signals = kind, Path(run_dir), signals
        self.server, self.info = server, info
        self.owns_server = kind == "vllm" and server is None
        self.stopped: dict | None = None

    def serve(self, spec, trace, writer) -> EngineResult:
        return asyncio.run(self._serve(spec, trace, writer))

    async def _serve(self, spec, trace, writer) -> EngineResult:
        stop = self.signals.attach()
        try:
            try:
                target = await self._bring_up(spec, stop)
            except ServerFailed as e:
                reason = self.signals.reason or str(e)
                print(f"harness run: {reason}", file=sys.stderr, flush=True)
                return external_result(
                    spec,
                    self.kind,
                    Drive(),
                    info=self.info,
                    command=self._command(),
                    sampler=None,
                    complete=False,
                    reason=reason,
                    host=hostname(),
                )
            driver = Driver(spec, trace, target, stop, self.signals.trip, writer, self.server)
            sampler = None

            def started() -> None:
                nonlocal sampler
                sampler = start_sampler(
                    self.server.pid if self.server else None, spec.run.nvml_interval_s, driver.clock
                )

            driver.on_start = started
            try:
                drive = await driver.run()
            finally:
                if sampler is not None:
                    sampler.stop()
            complete = drive.finished and self.signals.reason is None
            return external_result(
                spec,
                self.kind,
                drive,
                info=self.info,
                command=self._command(),
                sampler=sampler,
                complete=complete,
                reason=None if complete else self.signals.reason or "the run did not finish",
                host=hostname(),
            )
        finally:
            self.signals.detach()

    async def _bring_up(self, spec, stop: asyncio.Event) -> Target:
        if self.kind == "openai":
            async with aiohttp.ClientSession() as session:
                self.info = await describe(session, spec.engine.url.rstrip("/"), None)
            return Target(spec.engine.url.rstrip("/"), spec.engine.model)
        if self.server is None:
            self.server = launch_server(spec, self.run_dir)
        if self.info is None:
            self.info = await bring_up(spec, self.server, stop)
        return Target(self.server.launch.url, self.server.launch.model)

    def _command(self) -> str | None:
        return self.server.launch.command_text() if self.server is not None else None

    def close(self, failed: bool) -> None:
        if not self.owns_server or self.server is None:
            return
        self.stopped = stop_and_record(self.server, self.run_dir)


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
