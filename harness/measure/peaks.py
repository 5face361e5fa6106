"""Peak output rate and peak concurrency per one-second bucket, as ``vllm bench serve`` counts them.

Pure (no numpy, no I/O). Over the completed requests, with s_i the send of request i, e_i its
finish and t_ij its token times (all seconds on one clock):

* t0 = min_i s_i, buckets b = 0 … B − 1 with B = ⌈max_i e_i − t0⌉ + 1;
* tokens[b] = #{(i, j) : ⌊t_ij − t0⌋ = b}   (one per token time, i.e. per streamed chunk);
* concurrent[b] = #{i : ⌊s_i − t0⌋ ≤ b ≤ ⌊e_i − t0⌋}   (a request counts in every second it
touches);
* ``max_output_tokens_per_s`` = max_b tokens[b], ``max_concurrent_requests`` = max_b concurrent[b];
  0.0 and 0 without completed requests.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def peak_buckets(
    spans: Iterable[tuple[float, Sequence[float], float]],
) -> tuple[list[int], list[int]]:
    """(tokens per second bucket, requests touching each bucket) from (send, token times,
    finish)."""
    spans = list(spans)
    if not spans:
        return [], []
    t0 = min(s for s, _, _ in spans)
    n = int(math.ceil(max(e for _, _, e in spans) - t0)) + 1
    tokens, concurrent = [0] * n, [0] * n
    for send, times, finish in spans:
        for t in times:
            b = int(t - t0)  # truncation toward zero, as vLLM's int()
            if 0 <= b < n:
                tokens[b] += 1
        for b in range(int(send - t0), min(int(finish - t0), n - 1) + 1):
            concurrent[b] += 1
    return tokens, concurrent


def peaks(spans: Iterable[tuple[float, Sequence[float], float]]) -> dict[str, float | int]:
    """``max_output_tokens_per_s`` (float) and ``max_concurrent_requests`` (int), see the module
    docstring."""
    tokens, concurrent = peak_buckets(spans)
    return {
        "max_output_tokens_per_s": float(max(tokens, default=0)),
        "max_concurrent_requests": int(max(concurrent, default=0)),
    }
