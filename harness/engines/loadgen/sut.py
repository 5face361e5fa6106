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
milliseconds); then the request function's own times. ``mlperf_loadgen`` is imported only here,
only when a test runs.
"""

from __future__ import annotations

import array
import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from harness.engines.loadgen.settings import LoadGenOptions, test_settings_values
from harness.engines.openai_server.priority import realtime_thread
from harness.errors import UsageError
from harness.measure.metrics import RequestRecord
from harness.results.imports.loadgen import TRACE, read_trace

LOG_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)


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


def import_loadgen():
    """``mlperf_loadgen``, or a one-line error naming the install."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise UsageError(
            "--loadgen: mlperf_loadgen is not installed; pip install 'harness[loadgen]' "
            "(mlcommons-loadgen==6.0.17)"
        ) from None
    return mlperf_loadgen


def _response(lg, qid: int, ids: Sequence[int], n_tokens: int):
    """A response whose data is ``ids`` as int32; LoadGen copies it before the call returns, so
    the buffer only has to live through the call (the caller keeps it)."""
    buf = array.array("i", ids or [0])
    addr, count = buf.buffer_info()
    return buf, lg.QuerySampleResponse(qid, addr, count * buf.itemsize, n_tokens)


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
    lg = import_loadgen()
    log_dir.mkdir(parents=True, exist_ok=True)
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
    pending: list[Any] = []

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
        first_sent = False

        def on_first(token: int) -> None:
            nonlocal first_sent
            if not first_sent:
                first_sent = True
                buf, resp = _response(lg, qid, [token], 1)
                lg.FirstTokenComplete([resp])
                del buf

        try:
            ans = await request(q, rec, clock, on_first)
        except Exception as e:  # noqa: BLE001 (LoadGen must hear of every query, whatever failed)
            ans = Answer(tokens=[], error=f"{type(e).__name__}: {e}")
            rec.finish_s, rec.completed = clock(), False
        if ans.error:
            errors[seq] = ans.error
        if not first_sent:
            on_first(ans.tokens[0] if ans.tokens else 0)
        n = ans.server_tokens if ans.server_tokens is not None else len(ans.tokens)
        buf, resp = _response(lg, qid, ans.tokens, max(n, 1))
        lg.QuerySamplesComplete([resp])
        del buf

    def issue(samples) -> None:
        # LoadGen's one issue thread numbers samples in issue order: its trace's sample_seq
        now = clock()
        for s in samples:
            seq = len(pending)
            pending.append(asyncio.run_coroutine_threadsafe(one(s.id, seq, s.index, now), loop))

    settings = lg.TestSettings()
    for key, value in test_settings_values(opts).items():
        if key == "scenario":
            value = getattr(lg.TestScenario, value)
        elif key == "mode":
            value = getattr(lg.TestMode, value)
        setattr(settings, key, value)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = True
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(len(queries), len(queries), lambda s: None, lambda s: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        for f in pending:
            f.result(timeout=60)  # LoadGen returned: every query was completed
        if hasattr(request, "aclose"):
            asyncio.run_coroutine_threadsafe(request.aclose(), loop).result(timeout=10)
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    _arrivals_from_schedule(records, log_dir / TRACE)
    return LoadGenRun(
        [records[i] for i in sorted(records)], log_dir, errors, got.get("scheduling", "")
    )


def _arrivals_from_schedule(records: dict[int, RequestRecord], trace: Path) -> None:
    """arrival = our issue time − LoadGen's issue delay of the same sample (its trace); the request
    function's ``sent_s`` stays (the hop to our event loop is client queue)."""
    if not trace.exists():
        return
    samples, _, _ = read_trace(trace)
    for ev in samples.values():
        rec = records.get(int(ev["args"]["sample_seq"]))
        if rec is not None:  # arrival_s holds the issue time until here
            rec.arrival_s -= int(ev["args"]["issue_start_ns"]) * 1e-9
