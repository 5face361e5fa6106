"""Seeded workloads: arrival times, input/output lengths, random prompts, JSONL traces.

Pure (numpy only, no torch). A workload spec is read by attribute only, so any object
with the ``WorkloadSpec`` / ``LengthDist`` fields works (see :func:`build_trace`).

Arrival processes (rate λ in requests/s; the first request arrives at t = 0, as in
vLLM, and each later one after a gap):
  * poisson:  gaps ~ Exponential(mean 1/λ)                                  CV = 1
  * gamma:    gaps ~ Gamma(shape = b, scale = 1/(λ·b)), b = burstiness;  mean 1/λ, CV = 1/√b
  * constant: gaps = 1/λ                                                    CV = 0
  * closed:   no preset times; every arrival_s is 0.0 and the trace says
              ``closed_loop=True, concurrency=c``: the engine starts c requests and
              releases the next one each time one finishes.

Length distributions (integers, clipped, see :func:`sample_lengths`):
  fixed(value) · uniform(min, max) inclusive · normal(mean, std) rounded ·
  lognormal(mean, sigma): ``mean`` is the arithmetic MEAN of the lengths and ``sigma`` the
  std of ln(length), so mu = ln(mean) − sigma²/2 and the median is exp(mu).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.spec.trace_file import TRACE_KEYS, Request, load_trace, save_trace  # noqa: F401 (their home was here)

ARRIVALS = ("poisson", "gamma", "constant", "closed")
DISTS = ("fixed", "uniform", "normal", "lognormal")


@dataclass(frozen=True)
class Trace:
    requests: tuple[Request, ...]
    closed_loop: bool
    concurrency: int | None
    seed: int
    vocab_size: int
    duration_s: float | None = None  # stop releasing requests after this (if set)
    # open loop: at most this many requests in flight, later arrivals wait at the client for a
    # finish (vLLM's --max-concurrency with a rate; workload.max_concurrency); None: no cap
    max_concurrency: int | None = None

    def prompt_ids(self, req: Request) -> list[int]:
        """The request's prompt: its own ids, else the seeded ones of :func:`random_prompt`."""
        if req.prompt is not None:
            return list(req.prompt)
        return random_prompt(self.seed, req.request_id, req.input_len, self.vocab_size)


# ---------------------------------------------------------------- arrivals


def _cumulative_from_zero(gaps: np.ndarray) -> list[float]:
    # n arrivals need n−1 gaps: the first request is sent at t = 0.
    return np.concatenate(([0.0], np.cumsum(gaps[:-1]))).tolist() if len(gaps) else []


def poisson(rate: float, n: int, rng: np.random.Generator) -> list[float]:
    """n arrival times of a Poisson process at ``rate`` req/s (exponential gaps)."""
    _check_rate(rate)
    return _cumulative_from_zero(rng.exponential(1.0 / rate, size=n))


def gamma(rate: float, burstiness: float, n: int, rng: np.random.Generator) -> list[float]:
    """n arrival times with Gamma(shape=b, scale=1/(rate·b)) gaps: mean 1/rate, CV 1/√b.
    b = 1 is Poisson; b < 1 burstier; b > 1 more regular."""
    _check_rate(rate)
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    return _cumulative_from_zero(rng.gamma(burstiness, 1.0 / (rate * burstiness), size=n))


def constant(rate: float, n: int) -> list[float]:
    """n arrival times exactly 1/rate apart: 0, 1/rate, 2/rate, …"""
    _check_rate(rate)
    return [i / rate for i in range(n)]


def closed_loop(n: int) -> list[float]:
    """Closed loop has no preset times; all 0.0 (the engine releases on completion)."""
    return [0.0] * n


def _check_rate(rate: float) -> None:
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")


def _arrivals(
    arrival: str,
    rate: float | None,
    burstiness: float,
    n: int | None,
    duration_s: float | None,
    rng: np.random.Generator,
) -> list[float]:
    """Arrival times: n of them, or (n None) every arrival before duration_s; with both,
    the first n that fall before duration_s."""

    def draw(k: int) -> list[float]:
        if arrival == "poisson":
            return poisson(rate, k, rng)  # type: ignore[arg-type]
        if arrival == "gamma":
            return gamma(rate, burstiness, k, rng)  # type: ignore[arg-type]
        if arrival == "constant":
            return constant(rate, k)  # type: ignore[arg-type]
        return closed_loop(k)

    if n is not None:
        times = draw(n)
    else:
        # Draw a generous batch; redraw bigger (same rng state sequence) if it fell short.
        k = int(rate * duration_s * 1.2) + 16  # type: ignore[operator]
        while True:
            times = draw(k)
            if times[-1] >= duration_s:
                break
            k *= 2
    if duration_s is not None and arrival != "closed":
        times = [t for t in times if t < duration_s]
    return times


# ---------------------------------------------------------------- lengths


def sample_lengths(
    dist: Any, n: int, rng: np.random.Generator, max_len: int | np.ndarray, field: str = "length"
) -> np.ndarray:
    """n integer lengths from ``dist`` (a LengthDist-like object), clipped to
    [max(1, dist.min), min(dist.max, max_len)]; ``max_len`` may be per request.
    For normal/lognormal, ``min``/``max`` (when set) are clip bounds."""
    validate_length_dist(dist, field)
    kind = dist.dist
    if kind == "fixed":
        raw = np.full(n, float(dist.value))
    elif kind == "uniform":
        raw = rng.integers(dist.min, dist.max + 1, size=n).astype(float)
    elif kind == "normal":
        raw = rng.normal(dist.mean, dist.std, size=n)
    else:  # lognormal, parameterised by the arithmetic mean (see module docstring)
        mu = math.log(dist.mean) - dist.sigma**2 / 2.0
        raw = rng.lognormal(mu, dist.sigma, size=n)
    lo = max(1, getattr(dist, "min", None) or 1)
    hi = np.asarray(max_len)
    if getattr(dist, "max", None) is not None:
        hi = np.minimum(hi, dist.max)
    return np.clip(np.rint(raw), lo, hi).astype(np.int64)


def validate_length_dist(dist: Any, field: str) -> None:
    """Parameters of one LengthDist; errors name ``field`` (e.g. workload.input_len)."""
    kind = getattr(dist, "dist", None)
    if kind not in DISTS:
        raise UsageError(f"{field}.dist: unknown {kind!r}; use one of {', '.join(DISTS)}")

    def need(name: str, positive: bool = True) -> float:
        v = getattr(dist, name, None)
        if (
            v is None
            or isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
        ):
            raise UsageError(f"{field}.{name}: required for dist={kind}, got {v!r}")
        if name in ("value", "min", "max") and not isinstance(v, int):
            raise UsageError(f"{field}.{name}: must be an integer number of tokens, got {v!r}")
        if (positive and v <= 0) or (not positive and v < 0):
            cmp = "> 0" if positive else ">= 0"
            raise UsageError(f"{field}.{name}: must be {cmp}, got {v}")
        return v

    if kind == "fixed":
        need("value")
    elif kind == "uniform":
        if need("min") > need("max"):
            raise UsageError(f"{field}.min: {dist.min} exceeds {field}.max={dist.max}")
    elif kind == "normal":
        need("mean"), need("std", positive=False)
    else:
        need("mean"), need("sigma", positive=False)
    for name in ("min", "max"):
        v = getattr(dist, name, None)
        if v is not None and kind != "uniform" and (isinstance(v, bool) or v < 1):
            raise UsageError(f"{field}.{name}: must be a positive integer, got {v!r}")


def _upper_bound(dist: Any) -> float:
    """Largest length the dist can produce before context clipping (inf if unbounded)."""
    if dist.dist == "fixed":
        return dist.value
    m = getattr(dist, "max", None)
    return math.inf if m is None else m


def _lower_bound(dist: Any) -> int:
    """Smallest length the dist can produce (fixed value, else its min, else 1)."""
    if dist.dist == "fixed":
        return dist.value
    return max(1, getattr(dist, "min", None) or 1)


def _bound_name(dist: Any, bound: str) -> str:
    return "value" if dist.dist == "fixed" else bound


def _check_context(spec: Any, context_len: int) -> None:
    """Bounded lengths must fit the model context: input's largest + output's smallest,
    and both largest when both are bounded; unbounded tails are clipped instead."""
    i_dist, o_dist = spec.input_len, spec.output_len
    i_hi, o_hi, o_lo = _upper_bound(i_dist), _upper_bound(o_dist), _lower_bound(o_dist)
    if o_lo >= context_len:
        raise UsageError(
            f"workload.output_len.{_bound_name(o_dist, 'min')}: {o_lo} leaves no "
            f"room for input in the model context of {context_len} tokens; "
            f"use at most {context_len - 1}"
        )
    if i_hi != math.inf and i_hi + o_lo > context_len:
        raise UsageError(
            f"workload.input_len.{_bound_name(i_dist, 'max')}: {i_hi} + output "
            f"{o_lo} exceeds the model context of {context_len} tokens; "
            f"use at most {context_len - o_lo}"
        )
    if math.inf not in (i_hi, o_hi) and i_hi + o_hi > context_len:
        raise UsageError(
            f"workload.output_len.{_bound_name(o_dist, 'max')}: {o_hi} + input "
            f"{i_hi} exceeds the model context of {context_len} tokens; "
            f"use at most {context_len - i_hi}"
        )


# ---------------------------------------------------------------- prompts


def random_prompt(seed: int, request_id: int, length: int, vocab_size: int) -> list[int]:
    """``length`` token ids uniform in [0, vocab_size), a pure function of
    (seed, request_id): prompts need not be stored, and any rank can rebuild them."""
    rng = np.random.default_rng([seed, request_id, 0x9E3779B9])
    return rng.integers(0, vocab_size, size=length).tolist()


# ---------------------------------------------------------------- spec → trace


def _check_spec(spec: Any) -> None:
    arrival = spec.arrival
    if arrival not in ARRIVALS:
        raise UsageError(f"workload.arrival: unknown {arrival!r}; use one of {', '.join(ARRIVALS)}")
    n, dur = spec.num_requests, spec.duration_s
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UsageError(f"workload.num_requests: must be >= 1, got {n!r}")
    if dur is not None and not dur > 0:
        raise UsageError(f"workload.duration_s: must be > 0, got {dur}")
    if n is None and dur is None and spec.trace is None:
        raise UsageError("workload.num_requests: set num_requests or duration_s")
    if arrival == "closed":
        c = spec.concurrency
        if c is None or isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise UsageError(f"workload.concurrency: must be >= 1 for arrival=closed, got {c!r}")
        if n is None and spec.trace is None:
            raise UsageError(
                "workload.num_requests: required for arrival=closed "
                "(duration_s alone cannot size a closed-loop run)"
            )
    elif spec.trace is None:
        rate = spec.rate_rps
        if rate is None or not rate > 0 or not math.isfinite(rate):
            raise UsageError(f"workload.rate_rps: must be > 0, got {rate}")
        if arrival == "gamma" and not getattr(spec, "burstiness", 1.0) > 0:
            raise UsageError(f"workload.burstiness: must be > 0, got {spec.burstiness}")


def build_trace(spec: Any, vocab_size: int, context_len: int) -> Trace:
    """WorkloadSpec-like object → Trace. Seeded: the same spec gives the same trace.

    Independent random streams (from SeedSequence(seed)) drive arrivals, input lengths and
    output lengths, so changing the arrival process leaves the lengths unchanged.
    Lengths: input clipped to [1, context_len − L] (L = the output dist's smallest length:
    fixed value, else min, else 1); output to [1, context_len − input_i], as a server caps
    max_tokens by the room the prompt leaves. Bounded dists that cannot fit: UsageError.
    With ``spec.trace`` set, requests (times, lengths, prompts) come from that JSONL file,
    cut to num_requests and to duration_s if set; arrival=closed replays its lengths in
    a closed loop, any other arrival replays its times."""
    _check_spec(spec)
    if vocab_size < 1 or context_len < 2:
        raise UsageError(
            f"model: vocab_size={vocab_size} and context_len={context_len} must be >= 1 and >= 2"
        )
    closed = spec.arrival == "closed"
    conc = spec.concurrency if closed else None
    if spec.trace is not None:
        reqs = load_trace(
            spec.trace,
            context_len=context_len,
            vocab_size=vocab_size,
            block_size=getattr(spec, "trace_block_size", 512),
        )
        if spec.num_requests is not None:
            reqs = reqs[: spec.num_requests]
        if spec.duration_s is not None and not closed:
            reqs = [r for r in reqs if r.arrival_s < spec.duration_s]
        if closed:
            reqs = [Request(r.request_id, 0.0, r.input_len, r.output_len, r.prompt) for r in reqs]
        return Trace(tuple(reqs), closed, conc, spec.seed, vocab_size, spec.duration_s, _cap(spec))

    _check_context(spec, context_len)
    s_arr, s_in, s_out = np.random.SeedSequence(spec.seed).spawn(3)
    times = _arrivals(
        spec.arrival,
        spec.rate_rps,
        getattr(spec, "burstiness", 1.0),
        spec.num_requests,
        spec.duration_s,
        np.random.default_rng(s_arr),
    )
    n = len(times)
    ins = sample_lengths(
        spec.input_len,
        n,
        np.random.default_rng(s_in),
        context_len - _lower_bound(spec.output_len),
        "workload.input_len",
    )
    outs = sample_lengths(
        spec.output_len, n, np.random.default_rng(s_out), context_len - ins, "workload.output_len"
    )
    reqs = tuple(
        Request(i, float(t), int(a), int(b)) for i, (t, a, b) in enumerate(zip(times, ins, outs))
    )
    return Trace(reqs, closed, conc, spec.seed, vocab_size, spec.duration_s, _cap(spec))


def _cap(spec: Any) -> int | None:
    """The open loop's cap on requests in flight (none for a closed loop: its concurrency is the
    cap)."""
    return None if spec.arrival == "closed" else getattr(spec, "max_concurrency", None)
