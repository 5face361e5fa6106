"""MLPerf LoadGen drives a system under test: its SUT and QSL callbacks bridged to an asyncio
request function, every request recorded as a :class:`RequestRecord` on our clock beside
LoadGen's logs.

The QSL is the trace: sample index i is trace request i (LoadGen's ``performance_issue_unique``
issues each once). LoadGen calls ``issue`` from its own thread at its schedule; the request runs on
an event loop in a thread of ours (``asyncio.run_coroutine_threadsafe``), and the request function
calls back at the first token → ``FirstTokenComplete`` (with the first token id) and at the end →
``QuerySamplesComplete`` with every token id and ``n_tokens`` (the server's own count where it gave
one). A failed request is completed too (LoadGen waits for every query), with the tokens it got
(at least 1, LoadGen refuses 0); our record marks it failed.

Our record of request i: ``arrival_s`` = when LoadGen's issue callback ran (our clock) less
LoadGen's own issue delay for the sample (``issue_start_ns`` in its trace), so TTFT and
E2E run from LoadGen's schedule as LoadGen's do (a loaded host can delay its issue thread by
milliseconds); then the request function's own times. The test itself (settings, SUT/QSL,
responses) is ``harness.engines.loadgen.bridge``, the one module that imports ``mlperf_loadgen``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from harness.engines.loadgen.bridge import LOG_FILES, LoadGenTest, import_loadgen
from harness.engines.loadgen.settings import LoadGenOptions
from harness.engines.openai_server.priority import realtime_thread
from harness.measure.metrics import RequestRecord

__all__ = ["LOG_FILES", "Answer", "LoadGenRun", "Query", "import_loadgen", "run_loadgen"]


@dataclass(frozen=True)
class Query:
    """One trace request as LoadGen's sample: its prompt and how many tokens to generate."""

    prompt: list[int]
    output_len: int
    input_len: int


@dataclass
class Answer:
    """What the request function returns: the generated ids and the server's count, if any."""

    tokens: list[int]
    server_tokens: int | None = None
    error: str | None = None


# request(query, record, clock, on_first_token) -> Answer; it fills the record's times.
RequestFn = Callable[
    [Query, RequestRecord, Callable[[], float], Callable[[int], None]], Awaitable[Answer]
]


@dataclass
class LoadGenRun:
    """What a LoadGen test left: our records (request_id = LoadGen's sample_seq, the issue order)
    and the folder of its logs."""

    records: list[RequestRecord]
    log_dir: Path
    errors: dict[int, str]
    scheduling: str  # the SUT loop thread's policy ("SCHED_FIFO 1" or "normal (why)")


def run_loadgen(
    opts: LoadGenOptions, queries: Sequence[Query], request: RequestFn, log_dir: Path
) -> LoadGenRun:
    """Run one LoadGen test of ``queries`` through ``request``; blocks until LoadGen has written its
    logs into ``log_dir``."""
    test = LoadGenTest(opts, len(queries), log_dir)
    loop = asyncio.new_event_loop()
    got: dict[str, str] = {}

    def serve() -> None:
        # the loop thread at real-time priority, as the harness's own client
        # (openai_server/priority.py): on a busy host a descheduled thread between reading the
        # first token and telling LoadGen made the two clocks differ by 15 ms (measured, TP1
        # vLLM-CPU, 2 cores)
        with realtime_thread() as how:
            got["scheduling"] = how
            loop.run_forever()

    thread = threading.Thread(target=serve, name="loadgen-sut", daemon=True)
    thread.start()
    t0 = time.monotonic()
    clock = lambda: time.monotonic() - t0  # noqa: E731
    records: dict[int, RequestRecord] = {}
    errors: dict[int, str] = {}
    pending: list = []

    async def one(qid: int, seq: int, index: int, issued: float) -> None:
        q = queries[index]
        rec = RequestRecord(
            request_id=seq,
            replica=0,
            arrival_s=issued,
            admitted_s=None,
            first_token_s=None,
            input_len=q.input_len,
            output_len=q.output_len,
        )
        records[seq] = rec
        try:
            ans = await request(q, rec, clock, lambda tok: test.first_token(qid, tok))
        except Exception as e:  # noqa: BLE001 (LoadGen must hear of every query, whatever failed)
            ans = Answer(tokens=[], error=f"{type(e).__name__}: {e}")
            rec.finish_s, rec.completed = clock(), False
        if ans.error:
            errors[seq] = ans.error
        n = ans.server_tokens if ans.server_tokens is not None else len(ans.tokens)
        test.complete(qid, ans.tokens, n)

    def on_issue(qid: int, seq: int, index: int, t_mono: float) -> None:
        coro = one(qid, seq, index, t_mono - t0)
        pending.append(asyncio.run_coroutine_threadsafe(coro, loop))

    test.start(on_issue)
    try:
        test.wait()
    finally:
        for f in pending:
            f.result(timeout=60)  # LoadGen returned: every query was completed
        if hasattr(request, "aclose"):
            asyncio.run_coroutine_threadsafe(request.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    for seq, delay in test.issue_delays().items():
        if seq in records:  # arrival = the issue time less LoadGen's issue delay: its schedule
            records[seq].arrival_s -= delay
    return LoadGenRun(
        [records[i] for i in sorted(records)], log_dir, errors, got.get("scheduling", "")
    )
