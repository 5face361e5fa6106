"""LoadGen's request function for an OpenAI-compatible server (vLLM): the harness's own streaming
client (``harness.engines.openai_server.client.stream_request``), its first token reported to
LoadGen as soon as it is read, the server's ``usage.completion_tokens`` as ``n_tokens`` where it
sent one."""

from __future__ import annotations

from typing import Callable

import aiohttp

from harness.engines.loadgen.sut import Answer, Query
from harness.engines.openai_server.client import stream_request
from harness.measure.metrics import RequestRecord


class OpenAIRequests:
    """Callable as :data:`harness.engines.loadgen.sut.RequestFn`; one aiohttp session, opened on
    the first request (inside the SUT's event loop), closed by :meth:`aclose`."""

    def __init__(self, url: str, model: str):
        self.url, self.model = url, model
        self._session: aiohttp.ClientSession | None = None

    async def __call__(
        self,
        q: Query,
        rec: RequestRecord,
        clock: Callable[[], float],
        on_first_token: Callable[[int], None],
    ) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
            )
        out = await stream_request(
            self._session, self.url, self.model, q.prompt, rec, clock, on_first_token
        )
        usage = (out.usage or {}).get("completion_tokens")
        if isinstance(usage, int) and not isinstance(usage, bool) and out.error is None:
            rec.output_tokens = usage
        return Answer(tokens=out.tokens, server_tokens=rec.output_tokens, error=out.error)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
