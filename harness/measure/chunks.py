"""How the streamed tokens arrived (pure): a chunk is the tokens a request received at one time (one
server-sent event). vLLM sends one token per chunk while its API server keeps up and merges the
tokens produced meanwhile into one chunk when it lags; their count shows that lag on the client's
side, and it is why ITL is counted per chunk (``harness.measure.metrics.itls_s``).

* chunks            = Σ over measured completed requests of their distinct token times
* multi_token       = the chunks that carried more than one token
* tokens_in_multi   = the tokens those chunks carried
"""

from __future__ import annotations

from itertools import groupby
from typing import Iterable

from harness.measure.metrics import RequestRecord


def chunk_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    chunks = multi = tokens = 0
    for r in records:
        if r.warmup or not r.completed:
            continue
        for _, same in groupby(r.token_times_s):
            k = sum(1 for _ in same)
            chunks += 1
            if k > 1:
                multi, tokens = multi + 1, tokens + k
    return {"chunks": chunks, "multi_token": multi, "tokens_in_multi": tokens}
