"""The limits of every number in a spec: finite (the typed loading refuses NaN/inf), and inside a
range no real deployment leaves, so that no value reaches a rank that would fail there only (a
timedelta of 1e29 s, 3e8 requests' arrays, a collective timeout of inf).

``LIMITS`` names each numeric field by its dotted path (``[]``: every element of a list field);
``tests/test_validation.py`` checks that every numeric field of the spec tree has one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterator

from harness.errors import UsageError, shown

DAY_S = 86400.0
MAX_REQUESTS = 1_000_000  # requests in one run's trace (each one a record in memory)
MAX_TOKENS = 10_000_000  # any length in tokens
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limit:
    """``low <= x <= high`` (``low < x`` when ``open_low``); ``low=None``: the lower side is
    checked where it depends on other fields (``workload.rate_rps`` only matters for open loops)."""

    low: float | None
    high: float
    open_low: bool = False
    what: str = ""  # "lengths " → "lengths must be > 0"
    unit: str = ""


def _length(open_low: bool = True, high: float = MAX_TOKENS) -> Limit:
    return Limit(0, high, open_low=open_low, what="lengths " if open_low else "", unit=" tokens")


_LENGTHS = {
    f"workload.{which}.{k}": _length()
    for which in ("input_len", "output_len")
    for k in ("value", "min", "max", "mean")
}
_LENGTHS.update(
    {f"workload.{which}.std": _length(open_low=False) for which in ("input_len", "output_len")}
)
_LENGTHS.update(
    {f"workload.{which}.sigma": Limit(0, 10.0) for which in ("input_len", "output_len")}
)

LIMITS: dict[str, Limit] = {
    "cluster.nodes": Limit(1, 4096),
    "cluster.gpus_per_node": Limit(1, 1024),
    **{f"parallel.{k}": Limit(1, 65536) for k in ("tp", "pp", "dp", "ep")},
    "parallel.layer_split[]": Limit(1, 100_000, unit=" layers"),
    "parallel.gpu_map[]": Limit(0, 65535),
    "workload.rate_rps": Limit(None, 1e6, unit=" requests/s"),
    "workload.burstiness": Limit(0, 1e3, open_low=True),
    "workload.concurrency": Limit(None, 100_000),
    "workload.num_requests": Limit(1, MAX_REQUESTS, unit=" requests"),
    "workload.duration_s": Limit(0, 30 * DAY_S, open_low=True, unit=" s (30 days)"),
    "workload.seed": Limit(0, MAX_SEED),
    "workload.trace_block_size": Limit(1, MAX_TOKENS, unit=" tokens"),
    "workload.max_concurrency": Limit(1, 100_000),
    **_LENGTHS,
    "slo.confidence": Limit(0.5, 0.9999, open_low=True),
    "slo.max_requests": Limit(1, MAX_REQUESTS, unit=" requests"),
    "slo.max_seconds": Limit(0, 30 * DAY_S, open_low=True, unit=" s (30 days)"),
    "run.max_batch": Limit(1, 65536),
    "run.micro_batches": Limit(1, 65536),
    "run.kv_cache_fraction": Limit(0, 1, open_low=True),
    "run.max_seq_len": Limit(1, MAX_TOKENS, unit=" tokens"),
    "run.warmup_requests": Limit(0, 100_000),
    "run.timeout_s": Limit(0, 30 * DAY_S, open_low=True, unit=" s (30 days)"),
    "run.comm_timeout_s": Limit(0, DAY_S, open_low=True, unit=" s (1 day)"),
    "run.seed": Limit(0, MAX_SEED),
    "run.prefill_chunk": Limit(1, MAX_TOKENS, unit=" tokens"),
    "run.max_num_batched_tokens": Limit(1, MAX_TOKENS, unit=" tokens"),
    "run.profile_steps": Limit(0, 100_000),
    "run.nvml_interval_s": Limit(0.001, 3600.0, unit=" s"),
    "run.metric_percentiles[]": Limit(0, 100),
    "engine.start_timeout_s": Limit(0, DAY_S, open_low=True, unit=" s (1 day)"),
    "engine.port": Limit(1, 65535),
    "engine.metrics_interval_s": Limit(0.01, 3600.0, unit=" s"),
}


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _is_number_type(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_number_type(a) for a in typing.get_args(tp) if a is not type(None))
    return tp in (int, float)


def _is_number_list(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_number_list(a) for a in typing.get_args(tp) if a is not type(None))
    return typing.get_origin(tp) is list and _is_number_type(typing.get_args(tp)[0])


def numeric_fields(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every number a person wrote in a spec tree (dataclasses of the
    YAML fields; the resolved, non-init fields are skipped). List elements come as ``path[]``."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        if not f.init:
            continue
        path, value, tp = f"{prefix}{f.name}", getattr(node, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, path + ".")
        elif _is_number_list(tp):
            for v in value or ():
                yield path + "[]", v
        elif _is_number_type(tp):
            yield path, value


def numeric_paths(cls: type, prefix: str = "") -> Iterator[str]:
    """Every numeric field path of a spec class tree (by its type hints, whatever the values)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, path = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from numeric_paths(tp, path + ".")
        elif _is_number_list(tp):
            yield path + "[]"
        elif _is_number_type(tp):
            yield path


def check_limits(spec: Any) -> None:
    """Every number of ``spec`` inside its ``LIMITS`` range; the first one outside is a
    ``UsageError``. A field without a limit (a newer section) is only required to be finite, by the
    loader."""
    for path, v in numeric_fields(spec):
        limit = LIMITS.get(path)
        if v is None or limit is None:
            continue
        where = path.replace("[]", "")
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"{where}: must be a finite number, got {shown(v)}")
        if limit.low is not None and (v <= limit.low if limit.open_low else v < limit.low):
            raise UsageError(
                f"{where}: {limit.what}must be {'>' if limit.open_low else '>='} "
                f"{_num(limit.low)}, "
                f"got {shown(v)}"
            )
        if v > limit.high:
            raise UsageError(
                f"{where}: {_num(v)} is beyond the limit of {_num(limit.high)}{limit.unit}; "
                f"use at most {_num(limit.high)}"
            )
    w = spec.workload
    if (
        w.num_requests is None
        and w.duration_s is not None
        and w.rate_rps
        and w.trace is None
        and w.arrival != "closed"
        and w.rate_rps * w.duration_s > MAX_REQUESTS
    ):
        raise UsageError(
            f"workload.duration_s: rate_rps*duration_s = {_num(w.rate_rps * w.duration_s)} "
            f"requests, "
            f"beyond the limit of {_num(MAX_REQUESTS)}; shorten it or set num_requests"
        )
