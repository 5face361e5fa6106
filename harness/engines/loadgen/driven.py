"""LoadGen as the arrival source of the OpenAI-server driver (``engine.kind: openai | vllm`` with
``harness run --loadgen server|offline``).

The driver keeps everything of a run (warm-up, ``/metrics`` scrapes, the requests file flushed as
they finish, telemetry, stops); only its measured phase's arrivals change: instead of the trace's
schedule, LoadGen's test (``harness.engines.loadgen.bridge``, in its own thread) issues the
queries, each handed to the driver's event loop (``call_soon_threadsafe``) and streamed by the
driver's own request path. The first token read → ``FirstTokenComplete``; the end →
``QuerySamplesComplete`` with ``n_tokens`` = the server's ``usage.completion_tokens`` where it sent
one, else the token ids received. Request ids are LoadGen's issue order; a record's arrival is the
issue time moved back by LoadGen's issue delay (its scheduled time, where its latencies start).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.engines.loadgen.bridge import LoadGenTest
from harness.engines.loadgen.judged import loadgen_block
from harness.engines.loadgen.settings import LoadGenOptions
from harness.spec.workload import Request


def _n_tokens(res) -> int:
    usage = (res.usage or {}).get("completion_tokens")
    if isinstance(usage, int) and not isinstance(usage, bool) and res.error is None:
        return usage
    return len(res.tokens)


class LoadGenArrivals:
    """Called by the driver with itself as its measured phase (``Driver.arrivals``); afterwards
    :meth:`extra` gives the summary's ``loadgen`` block."""

    def __init__(self, opts: LoadGenOptions, log_dir: Path):
        self.opts, self.log_dir = opts, Path(log_dir)
        self.test: LoadGenTest | None = None

    async def __call__(self, driver) -> None:
        loop = asyncio.get_running_loop()
        trace, t0 = driver.trace, driver.out.t0
        self.test = test = LoadGenTest(self.opts, len(trace.requests), self.log_dir)
        tasks: list[asyncio.Task] = []

        async def one(qid: int, req: Request, prompt: list[int]) -> None:
            rec = driver._record(req, req.arrival_s)
            res = await driver._one(req, rec, prompt, on_first=lambda t: test.first_token(qid, t))
            test.complete(qid, res.tokens, _n_tokens(res))

        def start(qid: int, seq: int, index: int, t: float) -> None:
            src = trace.requests[index]
            req = Request(seq, t - t0, src.input_len, src.output_len, None)
            tasks.append(asyncio.create_task(one(qid, req, trace.prompt_ids(src))))

        test.start(lambda *a: loop.call_soon_threadsafe(start, *a))
        try:
            await asyncio.to_thread(test.wait)
            await asyncio.gather(*tasks)
        finally:
            if not test.finished:  # stopped: LoadGen must still end and write its logs
                for t in tasks:
                    t.cancel()
                test.abort()
        delays = test.issue_delays()
        for rec in driver.out.records:
            if not rec.warmup:
                rec.arrival_s -= delays.get(rec.request_id, 0.0)

    def extra(self, records, scheduling: str | None) -> dict[str, Any]:
        if self.test is None:
            return {}
        block = loadgen_block(self.opts, self.log_dir, records, self.test.issued, scheduling)
        return {"loadgen": block}
