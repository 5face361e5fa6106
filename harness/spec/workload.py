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

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import UsageError

ARRIVALS = ("poisson", "gamma", "constant", "closed")
DISTS = ("fixed", "uniform", "normal", "lognormal")
TRACE_KEYS = ("arrival_s", "input_len", "output_len", "prompt")


@dataclass(frozen=True)
class Request:
    request_id: int
    arrival_s: float  # scheduled, seconds since the run's start; 0.0 for closed loop
    input_len: int
    output_len: int  # target output tokens
    prompt: list[int] | None = None  # None: derive with Trace.prompt_ids (seeded)


@dataclass(frozen=True)
class Trace:
    requests: tuple[Request, ...]
    closed_loop: bool
    concurrency: int | None
    seed: int
    vocab_size: int
    duration_s: float | None = None  # stop releasing requests after this (if set)

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


def _arrivals(arrival: str, rate: float | None, burstiness: float, n: int | None,
              duration_s: float | None, rng: np.random.Generator) -> list[float]:
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


def sample_lengths(dist: Any, n: int, rng: np.random.Generator, max_len: int | np.ndarray,
                   field: str = "length") -> np.ndarray:
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
        mu = math.log(dist.mean) - dist.sigma ** 2 / 2.0
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
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) \
                or not math.isfinite(v):
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
        raise UsageError(f"workload.output_len.{_bound_name(o_dist, 'min')}: {o_lo} leaves no "
                         f"room for input in the model context of {context_len} tokens; "
                         f"use at most {context_len - 1}")
    if i_hi != math.inf and i_hi + o_lo > context_len:
        raise UsageError(f"workload.input_len.{_bound_name(i_dist, 'max')}: {i_hi} + output "
                         f"{o_lo} exceeds the model context of {context_len} tokens; "
                         f"use at most {context_len - o_lo}")
    if math.inf not in (i_hi, o_hi) and i_hi + o_hi > context_len:
        raise UsageError(f"workload.output_len.{_bound_name(o_dist, 'max')}: {o_hi} + input "
                         f"{i_hi} exceeds the model context of {context_len} tokens; "
                         f"use at most {context_len - i_hi}")


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
            raise UsageError("workload.num_requests: required for arrival=closed "
                             "(duration_s alone cannot size a closed-loop run)")
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
    a closed loop, any other arrival replays its times.
    """
    _check_spec(spec)
    if vocab_size < 1 or context_len < 2:
        raise UsageError(f"model: vocab_size={vocab_size} and context_len={context_len} "
                         "must be >= 1 and >= 2")
    closed = spec.arrival == "closed"
    conc = spec.concurrency if closed else None
    if spec.trace is not None:
        reqs = load_trace(spec.trace, context_len=context_len, vocab_size=vocab_size)
        if spec.num_requests is not None:
            reqs = reqs[: spec.num_requests]
        if spec.duration_s is not None and not closed:
            reqs = [r for r in reqs if r.arrival_s < spec.duration_s]
        if closed:
            reqs = [Request(r.request_id, 0.0, r.input_len, r.output_len, r.prompt) for r in reqs]
        return Trace(tuple(reqs), closed, conc, spec.seed, vocab_size, spec.duration_s)

    _check_context(spec, context_len)
    s_arr, s_in, s_out = np.random.SeedSequence(spec.seed).spawn(3)
    times = _arrivals(spec.arrival, spec.rate_rps, getattr(spec, "burstiness", 1.0),
                      spec.num_requests, spec.duration_s, np.random.default_rng(s_arr))
    n = len(times)
    ins = sample_lengths(spec.input_len, n, np.random.default_rng(s_in),
                         context_len - _lower_bound(spec.output_len),
                         "workload.input_len")
    outs = sample_lengths(spec.output_len, n, np.random.default_rng(s_out), context_len - ins,
                          "workload.output_len")
    reqs = tuple(Request(i, float(t), int(a), int(b))
                 for i, (t, a, b) in enumerate(zip(times, ins, outs)))
    return Trace(reqs, closed, conc, spec.seed, vocab_size, spec.duration_s)


# ---------------------------------------------------------------- JSONL traces


def save_trace(requests: Sequence[Request] | Trace, path: str | Path,
               include_prompts: bool = False) -> None:
    """Write one JSON object per line {"arrival_s", "input_len", "output_len"[, "prompt"]},
    atomically (temp file in the same directory, then os.replace). With include_prompts
    and a Trace, seeded prompts are materialised too."""
    trace = requests if isinstance(requests, Trace) else None
    reqs = trace.requests if trace is not None else requests
    lines = []
    for r in reqs:
        obj: dict[str, Any] = {"arrival_s": r.arrival_s, "input_len": r.input_len,
                               "output_len": r.output_len}
        if r.prompt is not None:
            obj["prompt"] = list(r.prompt)
        elif include_prompts and trace is not None:
            obj["prompt"] = trace.prompt_ids(r)
        lines.append(json.dumps(obj, separators=(",", ":")))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def load_trace(path: str | Path, context_len: int | None = None,
               vocab_size: int | None = None) -> list[Request]:
    """Read a JSONL trace (json only; blank lines skipped). Request ids are 0, 1, … in file
    order. Every problem raises UsageError "FILE:LINE: what is wrong"."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"workload.trace: cannot read {path}: {e.strerror}") from None
    reqs: list[Request] = []
    prev = 0.0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(TRACE_KEYS))
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(TRACE_KEYS)}")
        t = obj.get("arrival_s")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise UsageError(f'{where}: expected "arrival_s" as a number >= 0, got {t!r}')
        if t < prev:
            raise UsageError(f'{where}: "arrival_s" {t} is before the previous line\'s {prev}; '
                             "sort the trace by arrival_s")
        prev = float(t)
        for key in ("input_len", "output_len"):
            if not _is_pos_int(obj.get(key)):
                raise UsageError(f'{where}: expected "{key}" as a positive integer, '
                                 f"got {obj.get(key)!r}")
        i_len, o_len = obj["input_len"], obj["output_len"]
        if context_len is not None and i_len + o_len > context_len:
            raise UsageError(f"{where}: input_len {i_len} + output_len {o_len} exceeds the "
                             f"model context of {context_len} tokens")
        prompt = obj.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, list) or len(prompt) != i_len or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in prompt):
                raise UsageError(f'{where}: expected "prompt" as a list of input_len={i_len} '
                                 "non-negative token ids")
            if vocab_size is not None and prompt and max(prompt) >= vocab_size:
                raise UsageError(f'{where}: "prompt" token id {max(prompt)} is outside the '
                                 f"vocabulary [0, {vocab_size})")
        reqs.append(Request(len(reqs), float(t), i_len, o_len, prompt))
    return reqs
