"""Serve a trace through an OpenAI-compatible server: warm-up, then the trace on schedule (open
loop) or as a closed loop, with the server's /metrics scraped and the requests flushed to disk as
they complete. Asynchronous (asyncio + aiohttp), so a send never waits for another request.

Open loop: request i is sent at t0 + arrival_s (its scheduled arrival); ``sent_s`` records when it
actually left, so the client's lag is measured, never hidden. With ``trace.max_concurrency`` C
(vLLM's ``--max-concurrency`` with a rate) at most C are in flight: a request due while C are waits
at the client (an asyncio semaphore, FIFO as vLLM's) and ``sent_s`` is when it went. Closed loop
(``trace.closed_loop``): ``concurrency`` requests start at t0 and each finish releases the next; a
request's arrival is its release time (as in the reference engine). ``trace.duration_s`` stops new
releases after it. Warm-up: ``run.warmup_requests`` requests shaped like the trace's first ones
(their own seeded prompts), all at once, before t0; flagged ``warmup`` and timed from the warm-up's
start. On a stop (signal, ``run.timeout_s`` from the warm-up's start, the launched server exiting)
every open stream is cancelled (vLLM's shutdown waits for open streams) and what completed is kept.
While requests are due the loop only sends and reads: a /metrics scrape is filtered to the kept
lines and stored, and parsed (prometheus_client, milliseconds of CPU each) after the last request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
from dataclasses import dataclass, field

import aiohttp

from harness.engines.openai_server.client import StreamResult, stream_request
from harness.engines.openai_server.priority import realtime_thread
from harness.engines.openai_server.scrape import counter_total, kept_lines, parse_metrics, snapshot
from harness.measure.metrics import RequestRecord, ttft_s
from harness.measure.percentiles import percentile
from harness.results.summary import sequential_rule
from harness.spec.workload import Request, random_prompt

WARMUP_ID_BASE = 1_000_000_000  # the reference engine's warm-up ids: no trace uses them
DONE_COUNTER = "vllm:request_success_total"
FLUSH_S = 2.0


@dataclass
class Target:
    url: str
    model: str


@dataclass
class Drive:
    """What one pass over the trace produced."""

    records: list[RequestRecord] = field(default_factory=list)
    tokens: dict[int, list[int]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    released: dict[int, float] = field(default_factory=dict)  # when the cap let a held request go
    metric_rows: list[dict] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)  # the measured window's scrapes, in order
    baseline: dict | None = None
    final: dict | None = None
    metrics_note: str | None = None
    t0: float | None = None
    warmup_s: float | None = None
    wall_s: float | None = None
    finished: bool = False
    scheduling: str | None = (
        None  # the loop thread's policy during the run (harness.engines.openai_server.priority)
    )
    sequential: dict | None = None  # slo.until_decided: the stopping rule's looks


class Driver:
    """One pass over ``trace``; ``trip(reason)`` asks for a stop (it sets ``stop``), ``server`` (a
    ``ServerTree``, or None for a server someone else runs) is watched for an exit."""

    def __init__(
        self, spec, trace, target: Target, stop: asyncio.Event, trip, writer=None, server=None
    ):
        self.spec, self.trace, self.target, self.stop, self.writer = (
            spec,
            trace,
            target,
            stop,
            writer,
        )
        self.trip, self.server = trip, server
        self.on_start = None  # called once at t0 (e.g. to start telemetry on the run's clock)
        self.before_measure = None  # async (driver) -> None: after the warm-up, before t0
        self.arrivals = None  # async (driver) -> None: the measured phase's own arrival source
        self.out = Drive()
        self._texts: list[
            tuple[float, str]
        ] = []  # (t_s, kept /metrics lines) of the measured window
        self._t0 = time.monotonic()
        self.rule = sequential_rule(spec, len(trace.requests))  # slo.until_decided, or None

    def arrivals_closed(self) -> bool:
        """Checked before each arrival: the stopping rule says every SLO is decided (or its time
        budget is spent); those in flight are still awaited."""
        return self.rule is not None and self.rule.should_stop(self.out.records, self.clock())

    def clock(self) -> float:
        return time.monotonic() - self._t0

    async def run(self) -> Drive:
        # Threads (requests.parquet writes, telemetry) hold the GIL for at most this long before the
        # loop
        # gets it back: it bounds how late a send can be for that reason (CPython's default is 5
        # ms).
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)

        # A full collection scans every object this process holds (torch, pandas, ... imported:
        # 0.4-1.7 s measured on a loaded 2-core machine, a stall of every send and read); freezing
        # what exists now leaves the collector only the run's own objects.
        gc.collect()
        gc.freeze()
        try:
            with realtime_thread() as self.out.scheduling:
                return await self._run()
        finally:
            gc.unfreeze()
            sys.setswitchinterval(old_switch)

    async def _run(self) -> Drive:
        conn = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            self.session = session
            w0 = time.monotonic()
            self._t0 = w0
            watch = asyncio.create_task(self._watch(w0))
            try:
                return await self._serve(w0)
            finally:
                watch.cancel()

    async def _serve(self, w0: float) -> Drive:
        pre = await self._scrape()  # the server may have served others before this run
        await self._until_stopped(self._warmup())
        self.out.warmup_s = time.monotonic() - w0
        if self.before_measure is not None and not self.stop.is_set():
            # a pass apart from the measured window (vLLM's profiled window), after the warm-up
            await self._until_stopped(self.before_measure(self))
        if not self.stop.is_set():
            # The first parquet write initialises pyarrow (>100 ms holding the GIL, measured): not
            # at t > 0.
            await self._flush()
            base = await self._settled_scrape(
                pre, sum(1 for r in self.out.records if r.finish_s is not None)
            )
            self._t0 = time.monotonic()
            self.out.t0 = self._t0
            if base is not None:  # taken just before t0: the table's row at t = 0
                self._texts.append((0.0, base))
            # Started off the loop: the first request (often due at t = 0) must not wait for it.
            starter = threading.Thread(target=self.on_start or (lambda: None), daemon=True)
            starter.start()
            helpers = [
                asyncio.create_task(self._scrape_loop()),
                asyncio.create_task(self._flush_loop()),
            ]
            if self.arrivals is not None:  # LoadGen (harness.engines.loadgen.driven)
                main = self.arrivals(self)
            else:
                main = self._closed_loop() if self.trace.closed_loop else self._open_loop()
            self.out.finished = await self._until_stopped(main)
            self.out.wall_s = self.clock()
            if self.rule is not None:
                self.out.sequential = self.rule.summary(self.out.records, self.out.finished)
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await asyncio.to_thread(starter.join)
            finished = sum(1 for r in self.out.records if not r.warmup and r.finish_s is not None)
            final = await self._settled_scrape(base, finished)
            if final is not None:
                self._texts.append((self.clock(), final))
            self._parse_scrapes()
        return self.out

    def _parse_scrapes(self) -> None:
        """The stored scrapes → table rows and snapshots; the first is the baseline (t = 0), the
        last the final (the one after the last request, or the last that answered)."""
        for t, text in self._texts:
            rows = parse_metrics(text)
            self.out.metric_rows.extend(dict(r, t_s=t) for r in rows)
            self.out.snapshots.append(snapshot(rows))
        if len(self.out.snapshots) >= 2 and self._texts[0][0] == 0.0:
            self.out.baseline, self.out.final = self.out.snapshots[0], self.out.snapshots[-1]

    async def _settled_scrape(self, since, finished: int):
        """A scrape once the server has counted the ``finished`` requests the client saw end after
        the scrape ``since`` (its statistics are updated as the last chunk leaves, so briefly
        retried)."""
        got = None
        start = 0.0 if since is None else counter_total(since, DONE_COUNTER)
        for _ in range(10):
            got = await self._scrape()
            if got is None or since is None or counter_total(got, DONE_COUNTER) - start >= finished:
                break
            await asyncio.sleep(0.2)
        return got

    async def _watch(self, w0: float) -> None:
        """Trip the stop at run.timeout_s after the warm-up's start, or when the launched server
        exits."""
        deadline = w0 + self.spec.run.timeout_s
        while not self.stop.is_set():
            if self.server is not None and not self.server.running:
                tail = "\n    ".join(self.server.log_tail(15))
                self.trip(
                    f"the vLLM server exited (code {self.server.exit_code}) during the run; last "
                    f"lines of "
                    f"{self.server.log_path.name}:\n    {tail}"
                )
            elif time.monotonic() >= deadline:
                self.trip(f"run.timeout_s={self.spec.run.timeout_s:g} s exceeded")
            await asyncio.sleep(0.5)

    async def _until_stopped(self, coro) -> bool:
        """Run ``coro`` until it ends (True) or a stop is asked (False: it is cancelled)."""
        task = asyncio.create_task(coro)
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task in done:
            task.result()
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    # ---- requests
    async def _one(
        self, req: Request, rec: RequestRecord, prompt: list[int], cap=None, on_first=None
    ) -> StreamResult:
        self.out.records.append(rec)  # from its arrival on, held by ``cap`` or not
        waits = cap is not None and cap.locked()  # C in flight: it waits for a finish
        async with cap or contextlib.nullcontext():
            if waits:
                self.out.released[req.request_id] = self.clock()
            res: StreamResult = await stream_request(
                self.session, self.target.url, self.target.model, prompt, rec, self.clock, on_first
            )
        if self.spec.run.record_tokens:
            self.out.tokens[req.request_id] = res.tokens
        if res.error:
            self.out.errors[req.request_id] = res.error
        return res

    def _record(self, req: Request, arrival_s: float, warmup: bool = False) -> RequestRecord:
        return RequestRecord(
            request_id=req.request_id,
            replica=0,
            arrival_s=arrival_s,
            admitted_s=None,
            first_token_s=None,
            input_len=req.input_len,
            output_len=req.output_len,
            warmup=warmup,
        )

    async def _warmup(self) -> None:
        n = self.spec.run.warmup_requests
        base = list(self.trace.requests[:n])
        reqs = [
            Request(WARMUP_ID_BASE + i, 0.0, r.input_len, r.output_len, None)
            for i, r in enumerate(base)
        ]
        await asyncio.gather(
            *(
                self._one(
                    r,
                    self._record(r, 0.0, warmup=True),
                    random_prompt(
                        self.trace.seed, r.request_id, r.input_len, self.trace.vocab_size
                    ),
                )
                for r in reqs
            )
        )

    async def _open_loop(self) -> None:
        tasks = []
        cap = asyncio.Semaphore(self.trace.max_concurrency) if self.trace.max_concurrency else None
        for req in sorted(self.trace.requests, key=lambda r: (r.arrival_s, r.request_id)):
            while (
                delay := req.arrival_s - self.clock()
            ) > 0:  # asyncio may wake a timer a hair early
                await asyncio.sleep(delay)
            if self.arrivals_closed():
                break
            rec = self._record(req, req.arrival_s)
            tasks.append(asyncio.create_task(self._one(req, rec, self.trace.prompt_ids(req), cap)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _closed_loop(self) -> None:
        pending = list(self.trace.requests)
        limit = self.trace.duration_s

        async def worker() -> None:
            while pending:
                if limit is not None and self.clock() >= limit or self.arrivals_closed():
                    return
                req = pending.pop(0)
                await self._one(req, self._record(req, self.clock()), self.trace.prompt_ids(req))

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self.trace.concurrency or 1, len(pending)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # ---- /metrics and the requests file
    async def _scrape(self) -> str | None:
        """The kept lines of one GET /metrics; None when it failed (a server without /metrics is
        noted once and never asked again)."""
        if self.out.metrics_note is not None:
            return None
        try:
            async with self.session.get(
                self.target.url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)
            ) as r:
                if r.status != 200:
                    self.out.metrics_note = (
                        f"GET /metrics answered HTTP {r.status}: no server metrics"
                    )
                    return None
                text = await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            print(
                f"harness: /metrics scrape failed: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
            return None
        return kept_lines(text)

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.engine.metrics_interval_s)
            t = self.clock()
            got = await self._scrape()
            if got is not None:
                self._texts.append((t, got))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            main = [r for r in self.out.records if not r.warmup]
            done = sum(r.completed for r in main)
            running = sum(1 for r in main if r.finish_s is None)
            ttfts = [v for v in map(ttft_s, main) if v is not None]
            p99 = percentile(ttfts, 99.0)
            print(
                f"harness: [{done}/{len(self.trace.requests)} done, {running} running] "
                f"{done / max(self.clock(), 1e-9):.2f} req/s, p99 TTFT "
                f"{'-' if p99 is None else f'{p99 * 1e3:.0f} ms'}, {self.clock():.0f} s",
                file=sys.stderr,
                flush=True,
            )
            await self._flush()

    async def _flush(self) -> None:
        if self.writer is not None:
            rows = [dict(vars(r), token_times_s=list(r.token_times_s)) for r in self.out.records]
            tokens = dict(self.out.tokens) if self.spec.run.record_tokens else None
            await asyncio.to_thread(self.writer.flush_requests, rows, tokens)
