"""Pure serving metrics: per-request records in, vLLM ``bench serve``-style summary out.

No torch, no I/O, no printing. All times in the records are seconds on the coordinator's
monotonic clock, measured from the run's start; every ``*_ms`` output is milliseconds.

Per-request definitions (r is one record, n = tokens it produced, see :func:`tokens_out`):

* TTFT   = r.first_token_s − r.arrival_s        (scheduled arrival, so queueing counts)
* E2E    = r.finish_s − r.arrival_s             (vLLM calls it E2EL)
* TPOT   = (E2E − TTFT) / (n − 1)  = (finish − first_token) / (n − 1); undefined when n ≤ 1
* ITL    = the gaps between a request's distinct token times (one per stream chunk, as ``vllm
  bench serve`` counts them: a chunk of k tokens is one gap, not k − 1 zeros); pooled
* queue  = r.admitted_s − r.arrival_s
* client queue = r.sent_s − r.arrival_s          (0 when the request went out at its arrival)
  (for the harness's own client of an external engine this is its lag against the schedule:
  :func:`client_lag`, a slow client, not a slow server)

Latency origin. ``vllm bench serve`` measures TTFT and E2EL from the moment its client SENT the
request, which is later than the scheduled arrival when a client-side concurrency cap held it
back (its ``--max-concurrency`` with a rate) or the client lagged. ``origin="send"`` gives those
definitions: TTFT = first_token_s − sent, E2E = finish_s − sent, sent = r.sent_s or r.arrival_s.
TPOT and ITL do not depend on the origin. The harness's own summary uses ``origin="arrival"``;
vLLM's "E2EL including client queue" is our E2E from the arrival.

Latency statistics use completed, non-warm-up requests only. Warm-up requests are reported
apart under ``warmup_*`` keys and never enter the main statistics or throughputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from harness.errors import UsageError
from harness.measure.peaks import peaks
from harness.measure.percentiles import STAT_NAMES, percentile, stats

# SLO metric names accepted by ``summarize``; "e2e" is an alias of vLLM's "e2el".
SLO_METRICS = ("ttft", "tpot", "e2el")
_SLO_ALIASES = {"e2e": "e2el"}


@dataclass
class RequestRecord:
    """What the engine recorded for one request (times in seconds since the run's start)."""

    request_id: int
    replica: int
    arrival_s: float  # SCHEDULED arrival (open loop) or release time (closed loop)
    admitted_s: float | None
    first_token_s: float | None
    token_times_s: list[float] = field(default_factory=list)  # [0] == first_token_s
    finish_s: float | None = None
    input_len: int = 0
    output_len: int = 0  # target number of output tokens
    warmup: bool = False
    completed: bool = False
    # When the request was handed to the system under test, if later than arrival_s (a client-side
    # concurrency cap, a lagging client); None: at arrival_s.
    sent_s: float | None = None
    # Output tokens as the system counted them (vLLM: usage.completion_tokens) where one token time
    # per token is not known (a stream chunk may carry several); None: len(token_times_s).
    output_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RequestRecord":
        d = dict(d)
        d["token_times_s"] = [float(t) for t in d.get("token_times_s") or []]
        # A table column of optional numbers reads back as NaN where the value was None.
        for key in ("admitted_s", "first_token_s", "finish_s", "sent_s", "output_tokens"):
            v = d.get(key)
            d[key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        if d.get("output_tokens") is not None:
            d["output_tokens"] = int(d["output_tokens"])
        return cls(**d)


# ---------------------------------------------------------------- per-request metrics


def tokens_out(r: RequestRecord) -> int:
    """Output tokens produced: ``output_tokens`` when the engine counted them, else
    len(token_times_s); when the engine kept no per-token times, the target ``output_len`` of a
    completed request (0 otherwise)."""
    if r.output_tokens is not None:
        return r.output_tokens
    if r.token_times_s:
        return len(r.token_times_s)
    return r.output_len if r.completed else 0


ORIGINS = ("arrival", "send")


def start_s(r: RequestRecord, origin: str = "arrival") -> float:
    """Where TTFT and E2E start: the scheduled arrival, or (``origin="send"``) the send."""
    if origin == "send":
        return r.arrival_s if r.sent_s is None else r.sent_s
    if origin != "arrival":
        raise ValueError(f"latency origin must be one of {ORIGINS}, got {origin!r}")
    return r.arrival_s


def ttft_s(r: RequestRecord, origin: str = "arrival") -> float | None:
    """TTFT = first_token_s − arrival_s (or − sent, see :func:`start_s`); None before the first
    token."""
    return None if r.first_token_s is None else r.first_token_s - start_s(r, origin)


def e2e_s(r: RequestRecord, origin: str = "arrival") -> float | None:
    """E2E = finish_s − arrival_s (or − sent, see :func:`start_s`); None while unfinished."""
    return None if r.finish_s is None else r.finish_s - start_s(r, origin)


def client_queue_s(r: RequestRecord) -> float:
    """Client queue = sent − arrival_s (0 when the request went out at its arrival)."""
    return start_s(r, "send") - r.arrival_s


def client_lag(
    records: Sequence[RequestRecord],
    warn_ms: float = 5.0,
    released_s: Mapping[int, float] | None = None,
) -> dict[str, Any] | None:
    """The client's lag, sent − (arrival, or ``released_s[id]`` when a client-side cap let it go:
    the cap's wait is client queue, not lag), over the non-warm-up requests with ``sent_s``:
    ``sent``, ``p50_ms``, ``p99_ms``, ``max_ms`` and ``warning`` (text when p99 > ``warn_ms``); None
    without any."""
    lags = [
        r.sent_s - max(r.arrival_s, (released_s or {}).get(r.request_id, 0.0))
        for r in records
        if not r.warmup and r.sent_s is not None
    ]
    if not lags:
        return None
    st = _ms(stats(lags))
    warning = None
    if st["p99"] > warn_ms:
        warning = (
            f"client lag p99 {st['p99']:.1f} ms > {warn_ms:g} ms: the harness's client sent "
            f"requests late "
            f"against the schedule; latencies include that delay (a slow client, not a slow server)"
        )
    return {
        "sent": len(lags),
        "p50_ms": st["p50"],
        "p99_ms": st["p99"],
        "max_ms": max(lags) * 1e3,
        "warning": warning,
    }


def tpot_s(r: RequestRecord) -> float | None:
    """TPOT = (E2E − TTFT) / (n − 1), n = tokens_out(r); None when n ≤ 1 or unfinished."""
    n = tokens_out(r)
    if n <= 1 or r.finish_s is None or r.first_token_s is None:
        return None
    return (r.finish_s - r.first_token_s) / (n - 1)


def itls_s(r: RequestRecord) -> list[float]:
    """token_times_s[i] − token_times_s[i−1] where they differ: one ITL per chunk of tokens."""
    t = r.token_times_s
    return [t[i] - t[i - 1] for i in range(1, len(t)) if t[i] != t[i - 1]]


def queue_s(r: RequestRecord) -> float | None:
    """Queue delay = admitted_s − arrival_s (None if never admitted)."""
    return None if r.admitted_s is None else r.admitted_s - r.arrival_s


def _ms(stats_s: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else v * 1e3 for k, v in stats_s.items()}


# ---------------------------------------------------------------- SLOs and goodput


def normalize_slo(thresholds_ms: Mapping[str, float] | None) -> dict[str, float] | None:
    """Validate ``{"ttft": 2000, "tpot": 200, "e2el": ...}`` (ms); "e2e" means "e2el"."""
    if thresholds_ms is None:
        return None
    out: dict[str, float] = {}
    for key, value in thresholds_ms.items():
        name = _SLO_ALIASES.get(key, key)
        if name not in SLO_METRICS:
            raise UsageError(f"slo.{key}: unknown SLO metric; use one of ttft, tpot, e2el (ms)")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise UsageError(f"slo.{key}: must be a number of ms >= 0, got {value!r}")
        out[name] = float(value)
    return out


def meets_slo(
    r: RequestRecord, thresholds_ms: Mapping[str, float], origin: str = "arrival"
) -> bool:
    """True when the completed request meets EVERY threshold (value ≤ threshold, in ms), TTFT and
    E2E measured from ``origin`` (see :func:`start_s`). A 1-token request has no TPOT, so a TPOT
    threshold is vacuously met (as in vLLM, which counts its TPOT as 0)."""
    if not r.completed:
        return False
    for name, limit in thresholds_ms.items():
        if name == "ttft":
            v = ttft_s(r, origin)
        elif name == "e2el":
            v = e2e_s(r, origin)
        else:
            v = tpot_s(r)
            if v is None and tokens_out(r) <= 1:
                continue
        if v is None or v * 1e3 > limit:
            return False
    return True


# ---------------------------------------------------------------- summary


def measured_duration_s(records: Sequence[RequestRecord]) -> float | None:
    """Benchmark duration = last non-warm-up finish − first non-warm-up scheduled arrival;
    None when no non-warm-up request has finished."""
    main = [r for r in records if not r.warmup]
    finishes = [r.finish_s for r in main if r.finish_s is not None]
    if not main or not finishes:
        return None
    return max(finishes) - min(r.arrival_s for r in main)


def _per_s(count: float, duration_s: float | None) -> float | None:
    return None if not duration_s or duration_s <= 0 else count / duration_s


def latency_values_s(
    done: Sequence[RequestRecord], origin: str = "arrival"
) -> dict[str, list[float]]:
    """Per family, the values (s) its statistics are taken over, in record order: ``ttft``,
    ``tpot`` (requests with n > 1 only), ``itl`` (pooled), ``e2el`` (TTFT and E2E from
    ``origin``), ``queue`` (admitted requests) and ``client_queue``."""

    def kept(fn):
        return [v for v in map(fn, done) if v is not None]

    return {
        "ttft": kept(lambda r: ttft_s(r, origin)),
        "tpot": kept(tpot_s),
        "itl": [x for r in done for x in itls_s(r)],
        "e2el": kept(lambda r: e2e_s(r, origin)),
        "queue": kept(queue_s),
        "client_queue": [client_queue_s(r) for r in done],
    }


def _latency_block(
    done: Sequence[RequestRecord], origin: str = "arrival"
) -> dict[str, dict[str, float | None]]:
    """The four vLLM latency families plus queue delay, as stats in ms."""
    values = latency_values_s(done, origin)
    return {name: _ms(stats(values[name])) for name in ("ttft", "tpot", "itl", "e2el", "queue")}


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float | None = None,
    slo_thresholds_ms: Mapping[str, float] | None = None,
    latency_origin: str = "arrival",
) -> dict[str, Any]:
    """Records → one flat dict with vLLM ``bench serve`` field names.

    Counts: ``num_requests`` (non-warm-up), ``completed``, ``failed`` (finished but not
    completed, e.g. aborted), ``incomplete`` (never finished, e.g. still in flight at the
    end). Tokens: ``total_input_tokens`` = Σ input_len, ``total_output_tokens`` = Σ
    tokens_out over completed non-warm-up requests.
    Rates, D = ``duration_s`` (given, else :func:`measured_duration_s`; give vLLM's own
    ``duration`` — its client's clock from before the first send to after the last response — to
    reproduce a ``vllm bench serve`` result's rates): ``request_throughput`` = completed / D,
    ``output_throughput`` = total_output_tokens / D, ``total_token_throughput`` =
    (total_input_tokens + total_output_tokens) / D,
    ``request_goodput`` = (completed requests meeting every SLO threshold) / D (DistServe;
    None without thresholds). Rates are None when D is None or 0. Latencies:
    ``{mean,median,std,p50,p90,p95,p99}_{ttft,tpot,itl,e2el,queue}_ms``, TTFT, E2E and
    goodput measured from ``latency_origin`` ("arrival", ours; "send", vLLM's: see the module
    docstring; the summary is all numbers, so the caller records which). Peaks:
    ``max_output_tokens_per_s`` and
    ``max_concurrent_requests`` (harness.measure.peaks, vLLM's per-second buckets from the send).
    """
    if duration_s is not None and not duration_s > 0:
        raise UsageError(f"duration_s: must be > 0, got {duration_s}")
    slo = normalize_slo(slo_thresholds_ms)
    main = [r for r in records if not r.warmup]
    warm = [r for r in records if r.warmup]
    done = [r for r in main if r.completed]
    dur = duration_s if duration_s is not None else measured_duration_s(records)

    total_in = sum(r.input_len for r in done)
    total_out = sum(tokens_out(r) for r in done)
    good = None if slo is None else sum(1 for r in done if meets_slo(r, slo, latency_origin))
    out: dict[str, Any] = {
        "num_requests": len(main),
        "completed": len(done),
        "failed": sum(1 for r in main if not r.completed and r.finish_s is not None),
        "incomplete": sum(1 for r in main if not r.completed and r.finish_s is None),
        "duration_s": dur,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": _per_s(len(done), dur),
        "output_throughput": _per_s(total_out, dur),
        "total_token_throughput": _per_s(total_in + total_out, dur),
        "slo_thresholds_ms": slo,
        "good_requests": good,
        "request_goodput": None if good is None else _per_s(good, dur),
        **peaks(
            (start_s(r, "send"), r.token_times_s, r.finish_s)
            for r in done
            if r.finish_s is not None
        ),
    }
    for metric, st in _latency_block(done, latency_origin).items():
        for name in STAT_NAMES:
            out[f"{name}_{metric}_ms"] = st[name]
    replicas = sorted({r.replica for r in main})
    out["replica_completed"] = {str(k): sum(1 for r in done if r.replica == k) for k in replicas}
    out.update(_warmup_block(warm))
    return out


def _warmup_block(warm: Sequence[RequestRecord]) -> dict[str, Any]:
    """Warm-up requests alone: count, completions, mean/max latencies and their span
    (first warm-up arrival → last warm-up finish), which shows compile/cold-start cost."""
    done = [r for r in warm if r.completed]
    lat = _latency_block(done)
    finishes = [r.finish_s for r in warm if r.finish_s is not None]
    span = (max(finishes) - min(r.arrival_s for r in warm)) if finishes else None
    out: dict[str, Any] = {
        "warmup_requests": len(warm),
        "warmup_completed": len(done),
        "warmup_duration_s": span,
    }
    for metric in ("ttft", "tpot", "e2el"):
        out[f"warmup_mean_{metric}_ms"] = lat[metric]["mean"]
    e2es = [v for v in map(e2e_s, done) if v is not None]
    out["warmup_max_e2el_ms"] = max(e2es) * 1e3 if e2es else None
    return out


# ---------------------------------------------------------------- progress line


@dataclass(frozen=True)
class Progress:
    """Numbers for one live progress line; rendering is the caller's job."""

    elapsed_s: float
    completed: int
    in_flight: int  # admitted, not finished
    waiting: int  # arrived (arrival_s ≤ now), not admitted
    request_throughput: float | None  # completed / elapsed since the first arrival
    p99_ttft_ms: float | None  # over non-warm-up requests that have a first token
    p99_tpot_ms: float | None


def progress(records: Sequence[RequestRecord], now_s: float) -> Progress:
    """Snapshot of a running benchmark at ``now_s`` (warm-up requests ignored)."""
    main = [r for r in records if not r.warmup]
    start = min((r.arrival_s for r in main), default=now_s)
    elapsed = max(0.0, now_s - start)
    done = sum(1 for r in main if r.completed)
    ttfts = [v for v in map(ttft_s, main) if v is not None]
    tpots = [v for v in map(tpot_s, main) if v is not None]
    p_ttft = percentile(ttfts, 99.0)
    p_tpot = percentile(tpots, 99.0)
    return Progress(
        elapsed_s=elapsed,
        completed=done,
        in_flight=sum(1 for r in main if r.admitted_s is not None and r.finish_s is None),
        waiting=sum(
            1 for r in main if r.admitted_s is None and r.arrival_s <= now_s and r.finish_s is None
        ),
        request_throughput=_per_s(done, elapsed),
        p99_ttft_ms=None if p_ttft is None else p_ttft * 1e3,
        p99_tpot_ms=None if p_tpot is None else p_tpot * 1e3,
    )
