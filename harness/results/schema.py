"""The run directory's tables: one arrow schema per parquet file (``TABLES``), the run's file
names and summary vocabulary, and ``rows_to_table`` (rows → a table under its schema).

No torch import: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pyarrow as pa

from harness.measure.nvml_fields import COLUMNS as NVML_SAMPLE_COLUMNS

_F64, _I64, _STR, _BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


REQUESTS_SCHEMA = pa.schema(
    [
        _f("request_id", _I64, False),
        _f("replica", _I64, False),
        _f("arrival_s", _F64, False),
        _f("admitted_s", _F64),
        _f("first_token_s", _F64),
        _f("token_times_s", pa.list_(_F64)),
        _f("finish_s", _F64),
        _f("input_len", _I64, False),
        _f("output_len", _I64, False),
        _f("warmup", _BOOL, False),
        _f("completed", _BOOL, False),
    ]
)
TOKENS_FIELD = _f("tokens", pa.list_(_I64))  # only when run.record_tokens
# Columns a requests table may hold beyond its schema, typed even when every value is null; runs
# written before them lack them (readers default them to None).
OPTIONAL_REQUEST_FIELDS = {
    f.name: f
    for f in (
        TOKENS_FIELD,
        _f("sent_s", _F64),  # harness.measure.metrics.RequestRecord.sent_s
        _f("output_tokens", _I64),  # RequestRecord.output_tokens
        _f("error", _STR),  # why a request failed, as the system said (imported vLLM results)
    )
}

# padded_tokens, in_flight and t_submit_s: the reference engine fills them; a vLLM run's steps,
# read off its workers' traces (harness.measure.vllm_steps), leave null what the trace cannot give.
STEPS_SCHEMA = pa.schema(
    [
        _f("replica", _I64, False),
        _f("step", _I64, False),
        _f("phase", _STR, False),
        _f("n_rows", _I64, False),
        _f("n_prefill_rows", _I64, False),
        _f("n_decode_rows", _I64, False),
        _f("n_tokens", _I64, False),
        _f("padded_tokens", _I64),
        _f("in_flight", _I64),
        _f("available", _I64),
        _f("t_submit_s", _F64),
        _f("t_done_s", _F64),
        _f("warmup", _BOOL),
    ]
)

# The columns of ``harness.engines.reference.comm.COMM_COLUMNS``, repeated here because
# harness.engines.reference.comm imports torch
# and the readers must not; tests/test_results.py asserts the two stay equal.
COMM_COLUMNS = (
    "rank",
    "step",
    "phase",
    "op",
    "group",
    "group_size",
    "peer",
    "dtype",
    "numel",
    "bytes",
    "t_start_s",
    "t_end_s",
)
_COMM_TYPES = {
    "rank": _I64,
    "step": _I64,
    "phase": _STR,
    "op": _STR,
    "group": _STR,
    "group_size": _I64,
    "peer": _I64,
    "dtype": _STR,
    "numel": _I64,
    "bytes": _I64,
    "t_start_s": _F64,
    "t_end_s": _F64,
}
# Derived by harness.measure.comm_stats.with_bandwidth (nccl-tests' algbw/busbw), None if untimed.
COMM_DERIVED = ("time_s", "algbw_gbps", "busbw_gbps")
COMM_SCHEMA = pa.schema(
    [
        _f(c, _COMM_TYPES[c], c not in ("rank", "op", "group", "bytes", "numel"))
        for c in COMM_COLUMNS
    ]
    + [_f(c, _F64) for c in COMM_DERIVED]
)

STAGES_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp", "step")]
    + [_f(c, _F64) for c in ("t_recv_start_s", "t_recv_end_s", "t_compute_end_s", "t_send_end_s")]
)

_NVML_INT = {
    "device",
    "mem_used_bytes",
    "mem_total_bytes",
    "sm_clock_mhz",
    "temperature_c",
    "throttle_reasons",
    "nvlink_tx_bytes",
    "nvlink_rx_bytes",
    "nvlink_tx_delta_bytes",
    "nvlink_rx_delta_bytes",
    "rss_bytes",
    "sys_mem_used_bytes",
}
NVML_SCHEMA = pa.schema(
    [
        _f(c, _I64 if c in _NVML_INT else _F64, c not in ("t_s", "device"))
        for c in NVML_SAMPLE_COLUMNS
    ]
    + [_f("node", _STR, False)]
)

MEMORY_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp")]
    + [
        _f(c, _I64)
        for c in (
            "param_bytes",
            "kv_bytes",
            "peak_bytes",
            "predicted_weight_bytes",
            "predicted_kv_bytes",
        )
    ]
)

# An external engine's Prometheus /metrics, one row per kept sample per scrape (long format):
# t_s = seconds since the run's start (0 = the scrape just before it), sample = the Prometheus
# sample name (vllm:num_requests_running, vllm:time_to_first_token_seconds_bucket, ...), labels =
# its labels but model_name and le as "k=v,k=v", le = a bucket's bound, value.
SERVER_METRICS_SCHEMA = pa.schema(
    [
        _f("t_s", _F64, False),
        _f("sample", _STR, False),
        _f("labels", _STR),
        _f("le", _F64),
        _f("value", _F64),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "requests": REQUESTS_SCHEMA,
    "steps": STEPS_SCHEMA,
    "comm": COMM_SCHEMA,
    "stages": STAGES_SCHEMA,
    "nvml": NVML_SCHEMA,
    "memory": MEMORY_SCHEMA,
    "server_metrics": SERVER_METRICS_SCHEMA,
}

SUMMARY_FILE, SPEC_FILE, ENV_FILE = "summary.json", "spec.yaml", "env.json"
# A complete run's verdicts (FINAL_VERDICTS), then an unfinished run's.
FINAL_VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "UNMEASURED")
VERDICTS = (*FINAL_VERDICTS, "INCOMPLETE")
MEASURED_KEYS = (
    "throughput_rps",
    "gpu_utilization_pct",
    "bubble_ratio",
    "nvlink_utilization_pct",
    "memory_per_gpu_gb",
    "memory_balance_epsilon",
    "tp_allreduce_bytes_per_layer",
    "pp_sendrecv_bytes_per_stage",
    "stage_memory_gb",
    "model_memory_gb",
    "total_gpus",
)


def table_columns(name: str) -> list[str]:
    return list(TABLES[name].names)


def rows_to_table(name: str, rows: Iterable[Mapping[str, Any]] | Any) -> pa.Table:
    """Rows (dicts, or a pandas DataFrame) → an arrow table with the schema of ``TABLES[name]``.

    The schema is the minimum: a column outside it is kept with an inferred type (so a newer
    writer loses nothing); ``requests`` columns of ``OPTIONAL_REQUEST_FIELDS`` get their own type.
    A missing non-nullable value is a bug in the writer: ``ValueError`` naming table, row, column.
    """
    schema = TABLES[name]
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict("records")
    rows = [dict(r) for r in rows]
    required = [f.name for f in schema if not f.nullable]
    extra: list[str] = []
    for i, r in enumerate(rows):
        for c in required:
            v = r.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise ValueError(f"table {name} row {i}: column {c} is required, got {v!r}")
        for c, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[c] = None
            if c not in schema.names and c not in extra:
                extra.append(c)
    for c in extra:
        if name == "requests" and c in OPTIONAL_REQUEST_FIELDS:
            schema = schema.append(OPTIONAL_REQUEST_FIELDS[c])
        else:
            inferred = pa.array([r.get(c) for r in rows]).type
            schema = schema.append(
                pa.field(c, pa.string() if pa.types.is_null(inferred) else inferred)
            )
    return pa.Table.from_pylist(rows, schema=schema)
