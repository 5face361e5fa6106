"""One MLPerf LoadGen test as an arrival source: LoadGen runs in a thread of its own and decides
when each query is issued (Server: its Poisson schedule; Offline: all at t = 0); whoever serves
the queries hears of each one through ``on_issue`` and answers through :meth:`first_token` and
:meth:`complete`. Both engines use it: the reference engine's coordinator
(``harness.engines.reference.arrivals``) and the OpenAI-server driver
(``harness.engines.loadgen.driven``); ``harness.engines.loadgen.sut`` runs a request function
through it.

The QSL is the trace: sample index i is trace request i (``performance_issue_unique`` issues each
once; under MLPerf's rules LoadGen issues more queries than the trace holds and reuses its
samples). Queries are numbered in issue order (``seq``: LoadGen's own ``sample_seq`` in its
trace, since its one issue thread calls us in that order). ``issue_delays`` reads back, per seq,
how long after its scheduled time LoadGen called us, so a record's arrival can be the scheduled
time, as LoadGen's own latencies start there.

On a stop (:meth:`abort`) every query not yet answered is completed with one token, so LoadGen
ends its test and writes its logs (an INVALID or cut-short test, but never a hung thread).
"""

from __future__ import annotations

import array
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from harness.engines.loadgen.settings import LoadGenOptions, test_settings_values
from harness.errors import UsageError
from harness.results.imports.loadgen import TRACE, read_trace

LOG_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)

# on_issue(qid, seq, sample_index, t_monotonic): called on LoadGen's issue thread; must not block
OnIssue = Callable[[int, int, int, float], None]


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
    """A response whose data is ``ids`` as int32; LoadGen copies it before the call returns, so the
    buffer only has to live through the call (the caller keeps it)."""
    buf = array.array("i", [int(i) for i in ids] or [0])
    addr, count = buf.buffer_info()
    return buf, lg.QuerySampleResponse(qid, addr, count * buf.itemsize, max(int(n_tokens), 1))


class LoadGenTest:
    """One test of ``n_samples`` trace requests under ``opts``, its logs into ``log_dir``."""

    def __init__(self, opts: LoadGenOptions, n_samples: int, log_dir: Path):
        self.opts, self.n_samples, self.log_dir = opts, n_samples, Path(log_dir)
        self.lg = import_loadgen()
        self._lock = threading.Lock()
        self._open: set[int] = set()  # issued, not yet completed
        self._first_sent: set[int] = set()
        self._issued = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._aborted = False

    # ---- the test's lifetime
    def start(self, on_issue: OnIssue) -> None:
        """Start the test in its own thread; ``on_issue`` hears of every query as LoadGen issues
        it."""
        lg = self.lg
        self.log_dir.mkdir(parents=True, exist_ok=True)

        def issue(samples) -> None:
            now = time.monotonic()
            for s in samples:
                with self._lock:
                    seq = self._issued
                    self._issued += 1
                    self._open.add(s.id)
                if self._aborted:  # a stopped run: answered at once, LoadGen runs to its end
                    self.complete(s.id, [0], 1)
                else:
                    on_issue(s.id, seq, s.index, now)

        settings = lg.TestSettings()
        for key, value in test_settings_values(self.opts).items():
            if key == "scenario":
                value = getattr(lg.TestScenario, value)
            elif key == "mode":
                value = getattr(lg.TestMode, value)
            setattr(settings, key, value)
        log = lg.LogSettings()
        log.log_output.outdir = str(self.log_dir)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = True
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(self.n_samples, self.n_samples, lambda s: None, lambda s: None)

        def run() -> None:
            try:
                lg.StartTestWithLogSettings(sut, qsl, settings, log)
            except BaseException as e:  # noqa: BLE001 (re-raised by wait())
                self._error = e
            finally:
                lg.DestroyQSL(qsl)
                lg.DestroySUT(sut)

        self._thread = threading.Thread(target=run, name="loadgen-test", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        """LoadGen's test has returned: every query it issued was answered, its logs written."""
        return self._thread is not None and not self._thread.is_alive()

    @property
    def issued(self) -> int:
        return self._issued

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def abort(self, timeout: float = 4.0) -> None:
        """Answer every open query, and every one LoadGen issues from now on, with one token (a
        stopped run), and wait for LoadGen to end."""
        self._aborted = True
        with self._lock:
            open_ = sorted(self._open)
        for qid in open_:
            self.complete(qid, [0], 1)
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- answers (any thread)
    def first_token(self, qid: int, token: int) -> None:
        with self._lock:
            if qid in self._first_sent or qid not in self._open:
                return
            self._first_sent.add(qid)
        buf, resp = _response(self.lg, qid, [token], 1)
        self.lg.FirstTokenComplete([resp])
        del buf

    def complete(self, qid: int, tokens: Sequence[int], n_tokens: int) -> None:
        """The query's end: its token ids and LoadGen's ``n_tokens`` (a first token is reported
        first when none was: LoadGen needs one for its TTFT)."""
        self.first_token(qid, tokens[0] if tokens else 0)
        with self._lock:
            if qid not in self._open:
                return
            self._open.discard(qid)
        buf, resp = _response(self.lg, qid, tokens, n_tokens)
        self.lg.QuerySamplesComplete([resp])
        del buf

    # ---- after the test
    def issue_delays(self) -> dict[int, float]:
        """seq → seconds from LoadGen's scheduled time to its issue call (its trace's
        ``issue_start_ns``); empty without the trace."""
        trace = self.log_dir / TRACE
        if not trace.exists():
            return {}
        samples, _, _ = read_trace(trace)
        return {
            int(ev["args"]["sample_seq"]): int(ev["args"]["issue_start_ns"]) * 1e-9
            for ev in samples.values()
        }
