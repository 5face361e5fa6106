"""A ``vllm bench serve --save-result --save-detailed`` result file read back as request records,
its header fields and the workload it describes (pure; ``harness import-bench`` writes the run
directory).

From vLLM's per-request lists (vllm/benchmarks/serve.py, 0.32), request i becomes a record with
(times in s, on the run's clock, whose 0 is the first request's arrival):

* o = min_i (start_times[i] − queue_times[i]): vLLM's clock when the first request was due;
* sent_s = start_times[i] − o (vLLM's send), arrival_s = sent_s − queue_times[i] (when vLLM's
  client was due to send it: the client-side queue of ``--max-concurrency`` precedes the send);
  with ``--request-rate inf`` every request was due at once, so the arrival is the send (a closed
  loop releases a request when it is sent, as the harness's closed loop does);
* completed = errors[i] == "" and ttfts[i] > 0 (vLLM's success: a first chunk and no error);
* first_token_s = sent_s + ttfts[i]; token_times_s = first_token_s + the running sum of itls[i],
  the same accumulation vLLM's peak counting uses; finish_s = sent_s + latencies[i];
* output_tokens = output_lens[i] (vLLM's count, usage.completion_tokens, may exceed the chunks);
  output_len = output_lens[i]; input_len = input_lens[i]; admitted_s = None (the server's own
  queue is not in the file).

Summarised with ``latency_origin="send"`` and the file's ``duration``, these records give the file's
own numbers (harness.measure.metrics.summarize); ``goodput`` thresholds are not in the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.measure.metrics import RequestRecord
from harness.spec.json_file import read_json_file

DETAILED_LISTS = (
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "errors",
)
_MARKS = ("duration", "completed", "request_throughput")  # keys every bench serve result has
# Scalars of a result file that the recomputed summary must reproduce (where the file has them).
REPRODUCED = (
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "request_goodput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
)
LATENCY_FAMILIES = ("ttft", "tpot", "itl", "e2el")


def read_bench_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a ``vllm bench serve --save-result --save-detailed`` file, checked."""
    p = Path(path)
    where = f"import-bench: {p}"
    data = read_json_file(
        p,
        "import-bench",
        "give the JSON file vllm bench serve --save-result wrote",
        several="it holds several results (--append-result): keep one per file",
    )
    if any(k not in data for k in _MARKS):
        raise UsageError(
            f"{where}: not a vllm bench serve result (no {', '.join(_MARKS)}); "
            "give the JSON file vllm bench serve --save-result wrote"
        )
    check_lists(data, where)
    return data


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_lists(data: dict[str, Any], where: str) -> int:
    """The per-request lists: present, one entry per request each, of the right types. Returns n."""
    missing = [k for k in DETAILED_LISTS if not isinstance(data.get(k), list)]
    if missing:
        raise UsageError(
            f"{where}: no per-request {', '.join(missing)}; rerun vllm bench serve with "
            "--save-result --save-detailed"
        )
    lengths = {k: len(data[k]) for k in DETAILED_LISTS}
    if "queue_times" in data and isinstance(data["queue_times"], list):
        lengths["queue_times"] = len(data["queue_times"])
    n = lengths["start_times"]
    bad = next((k for k, v in lengths.items() if v != n), None)
    if bad is not None:
        raise UsageError(
            f"{where}: {bad} has {lengths[bad]} entries but start_times has {n}; "
            "the per-request lists must have one entry per request (a truncated or edited file?)"
        )
    if n == 0:
        raise UsageError(f"{where}: the per-request lists are empty; the benchmark sent no request")
    if not _is_num(data["duration"]) or data["duration"] <= 0:
        raise UsageError(
            f"{where}: duration {data['duration']!r} is not a positive number of seconds"
        )
    for k in ("input_lens", "output_lens"):
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in data[k]):
            raise UsageError(f"{where}: {k} must hold token counts (integers >= 0)")
    for k in (
        "ttfts",
        "latencies",
        "start_times",
        *(["queue_times"] if "queue_times" in lengths else []),
    ):
        if not all(_is_num(x) for x in data[k]):
            raise UsageError(f"{where}: {k} must hold numbers of seconds")
    if not all(isinstance(x, list) and all(_is_num(y) for y in x) for x in data["itls"]):
        raise UsageError(f"{where}: itls must hold one list of seconds per request")
    if not all(isinstance(x, str) or x is None for x in data["errors"]):
        raise UsageError(f"{where}: errors must hold one text per request")
    return n


def records_from_bench(data: dict[str, Any]) -> tuple[list[RequestRecord], dict[int, str]]:
    """Records (see the module docstring) and the failed requests' error texts by request id."""
    n = len(data["start_times"])
    queue = data.get("queue_times") if isinstance(data.get("queue_times"), list) else [0.0] * n
    if str(data.get("request_rate")) == "inf":
        queue = [
            0.0
        ] * n  # every request was due at t = 0: its queue is a closed loop's wait, not latency
    due = [s - q for s, q in zip(data["start_times"], queue)]
    origin = min(due)
    records, errors = [], {}
    for i in range(n):
        sent = data["start_times"][i] - origin
        ttft, err = data["ttfts"][i], data["errors"][i] or ""
        done = err == "" and ttft > 0
        first = sent + ttft if ttft > 0 else None
        times: list[float] = []
        if first is not None:
            t = data["start_times"][i] + ttft  # vLLM's own accumulation, then onto the run's clock
            times.append(t - origin)
            for gap in data["itls"][i]:
                t += gap
                times.append(t - origin)
        records.append(
            RequestRecord(
                request_id=i,
                replica=0,
                arrival_s=due[i] - origin,
                admitted_s=None,
                first_token_s=first,
                token_times_s=times,
                finish_s=sent + data["latencies"][i],
                input_len=data["input_lens"][i],
                output_len=data["output_lens"][i],
                warmup=False,
                completed=done,
                sent_s=sent,
                output_tokens=data["output_lens"][i] if done else None,
            )
        )
        if not done:
            errors[i] = err or "failed (vLLM recorded no error text)"
    return records, errors


def selected_stats(data: dict[str, Any]) -> tuple[list[str], list[float]]:
    """The ``--percentile-metrics`` and ``--metric-percentiles`` a file was written with, read from
    its keys."""
    metrics = [
        m
        for m in (*LATENCY_FAMILIES, "client_queue_time", "e2el_including_client_queue")
        if f"mean_{m}_ms" in data
    ]
    qs: set[float] = set()
    for key in data:
        for m in metrics:
            tail = f"_{m}_ms"
            if key.startswith("p") and key.endswith(tail):
                try:
                    qs.add(float(key[1 : -len(tail)]))
                except ValueError:
                    pass
    return metrics, sorted(qs)


def _rate(v: Any) -> float:
    if v is None or str(v) == "inf":
        return math.inf
    try:
        return float(v)
    except (TypeError, ValueError):
        raise UsageError(
            f'import-bench: request_rate {v!r} is neither a number nor "inf"'
        ) from None


def _lengths(values: list[int]) -> dict[str, Any]:
    lo, hi = min(values), max(values)
    return {"dist": "fixed", "value": lo} if lo == hi else {"dist": "uniform", "min": lo, "max": hi}


def workload_from_bench(data: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``workload`` the file describes: rate, burstiness and concurrency as vLLM's flags
    (harness.spec.bench_flags), lengths as the range the requests spanned."""
    rate, conc = _rate(data.get("request_rate")), data.get("max_concurrency")
    n = len(data["start_times"])
    burst = data.get("burstiness", 1.0)
    w: dict[str, Any] = {"num_requests": int(data.get("num_prompts") or n)}
    if math.isinf(rate):
        w.update(arrival="closed", concurrency=int(conc) if conc else w["num_requests"])
    else:
        w["rate_rps"] = rate
        if str(burst) == "inf":
            w["arrival"] = "constant"
        elif burst == 1:
            w["arrival"] = "poisson"
        else:
            w.update(arrival="gamma", burstiness=float(burst))
        if conc:
            w["max_concurrency"] = int(conc)
    done_out = [o for o, e in zip(data["output_lens"], data["errors"]) if not e and o > 0]
    w["input_len"] = _lengths(list(data["input_lens"]))
    w["output_len"] = _lengths(done_out or [1])
    return w


def layout_from_bench(data: dict[str, Any]) -> dict[str, int] | None:
    """tp/pp/dp from the header's ``--metadata`` keys (``tp=2`` or ``tensor_parallel_size=2``, as
    vLLM's sweep plots read them), else None."""
    out = {}
    for short, long in (
        ("tp", "tensor_parallel_size"),
        ("pp", "pipeline_parallel_size"),
        ("dp", "data_parallel_size"),
    ):
        v = data.get(long, data.get(short))
        if v is None:
            continue
        try:
            out[short] = int(v)
        except (TypeError, ValueError):
            raise UsageError(
                f"import-bench: metadata {short}={v!r} is not a whole number"
            ) from None
        if out[short] < 1:
            raise UsageError(f"import-bench: metadata {short}={v!r} must be >= 1")
    return {"tp": out.get("tp", 1), "pp": out.get("pp", 1), "dp": out.get("dp", 1)} if out else None


def file_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The file's own scalar results (what the recomputed summary is checked against)."""
    keys = [*REPRODUCED, "duration", *[k for k in data if k.endswith("_ms")]]
    return {k: data[k] for k in keys if k in data and (data[k] is None or _is_num(data[k]))}


def unreproduced(data: dict[str, Any], metrics: dict[str, Any], rel: float = 1e-9) -> list[str]:
    """The file's numbers our summary does not reproduce (beyond float rounding), as 'key: file vs
    ours'."""
    out = []
    for key, want in file_metrics(data).items():
        if key not in metrics or key == "duration":
            continue
        got = metrics[key]
        if want is None or got is None:
            if want != got:
                out.append(f"{key}: {want} vs {got}")
        elif not math.isclose(float(want), float(got), rel_tol=rel, abs_tol=1e-9):
            out.append(f"{key}: {want} vs {got}")
    return out
