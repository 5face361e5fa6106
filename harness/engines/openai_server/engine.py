"""The OpenAI-compatible server engine behind the seam: the trace streamed to a server that speaks
the OpenAI completions API, the common result back. ``OpenAIServerEngine`` is ``kind: openai`` (a
server someone else runs, at ``engine.url``); ``harness.engines.vllm.engine.VllmEngine`` is the
same engine with a server it launches first (``kind: vllm``).

Both run in the ``harness run`` process itself, in one asyncio loop: bring the server up (check the
given one, or launch one and wait for readiness), then ``Driver`` serves the trace, then
``external_result`` turns it into the common result. Failure: a server that dies or never becomes
ready, a stop signal or ``run.timeout_s`` end the run incomplete (exit 3) with the reason.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from harness.engines.base import EngineResult
from harness.engines.loadgen.driven import LoadGenArrivals
from harness.engines.openai_server.driver import Drive, Driver, Target
from harness.engines.openai_server.readiness import ServerFailed, ServerInfo, describe
from harness.engines.openai_server.result import external_result, hostname


class OpenAIServerEngine:
    """``kind: openai``: a server someone else runs. Subclasses that launch their server override
    ``_bring_up``, ``_start_sampler``, ``_command`` and ``close``; ``server`` is then the launched
    process tree, which the driver watches for an early exit."""

    kind = "openai"

    def __init__(self, run_dir: str | Path, signals, info: ServerInfo | None = None, loadgen=None):
        self.run_dir, self.signals, self.info = Path(run_dir), signals, info
        self.server = None
        # --loadgen: LoadGen issues the measured phase's queries (harness.engines.loadgen.driven)
        self.arrivals = None if loadgen is None else LoadGenArrivals(loadgen, self.run_dir)

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
                    facts=self._facts(),
                    sampler=None,
                    complete=False,
                    reason=reason,
                    host=hostname(),
                )
            driver = Driver(spec, trace, target, stop, self.signals.trip, writer, self.server)
            sampler = None

            def started() -> None:
                nonlocal sampler
                sampler = self._start_sampler(spec, driver.clock)

            driver.on_start = started
            driver.before_measure = self._before_measure(spec)
            driver.arrivals = self.arrivals
            try:
                drive = await driver.run()
            finally:
                if sampler is not None:
                    sampler.stop()
            complete = drive.finished and self.signals.reason is None
            result = external_result(
                spec,
                self.kind,
                drive,
                info=self.info,
                command=self._command(),
                facts=self._facts(),
                sampler=sampler,
                complete=complete,
                reason=None if complete else self.signals.reason or "the run did not finish",
                host=hostname(),
            )
            if self.arrivals is not None:
                result.extra.update(self.arrivals.extra(drive.records, drive.scheduling))
            return result
        finally:
            self.signals.detach()

    async def _bring_up(self, spec, stop: asyncio.Event) -> Target:
        async with aiohttp.ClientSession() as session:
            self.info = await describe(session, spec.engine.url.rstrip("/"), None)
        return Target(spec.engine.url.rstrip("/"), spec.engine.model)

    def _before_measure(self, spec):
        """An async ``(driver) -> None`` run after the warm-up, before the measured window, or
        None."""
        return None

    def _start_sampler(self, spec, clock):
        """None: which GPUs someone else's server uses is not known here."""
        return None

    def _command(self) -> str | None:
        return None

    def _facts(self) -> dict:
        """What this engine adds to ``summary.engine`` (a launching engine: what it chose)."""
        return {}

    def close(self, failed: bool) -> None:
        """Nothing to release: the server is someone else's."""
