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


REQUESTS_SCHEMA = pa.schema([
    _f("request_id", _I64, False), _f("replica", _I64, False), _f("arrival_s", _F64, False),
    _f("admitted_s", _F64), _f("first_token_s", _F64), _f("token_times_s", pa.list_(_F64)),
    _f("finish_s", _F64), _f("input_len", _I64, False), _f("output_len", _I64, False),
    _f("warmup", _BOOL, False), _f("completed", _BOOL, False),
])
TOKENS_FIELD = _f("tokens", pa.list_(_I64))   # only when run.record_tokens
# Columns a requests table may hold beyond its schema, typed even when every value is null; runs
# written before them lack them (readers default them to None).
OPTIONAL_REQUEST_FIELDS = {f.name: f for f in (
    TOKENS_FIELD,
    _f("sent_s", _F64),          # harness.measure.metrics.RequestRecord.sent_s
    _f("output_tokens", _I64),   # RequestRecord.output_tokens
    _f("error", _STR),           # why a request failed, as the system said (imported vLLM results)
)}

STEPS_SCHEMA = pa.schema([
    _f("replica", _I64, False), _f("step", _I64, False), _f("phase", _STR, False),
    _f("n_rows", _I64, False), _f("n_prefill_rows", _I64, False), _f("n_decode_rows", _I64, False),
    _f("n_tokens", _I64, False), _f("padded_tokens", _I64, False), _f("in_flight", _I64, False),
    _f("available", _I64),
    _f("t_submit_s", _F64, False), _f("t_done_s", _F64), _f("warmup", _BOOL),
])

# The columns of ``harness.engines.reference.comm.COMM_COLUMNS``, repeated here because harness.engines.reference.comm imports torch
# and the readers must not; tests/test_results.py asserts the two stay equal.
COMM_COLUMNS = ("rank", "step", "phase", "op", "group", "group_size", "peer", "dtype", "numel", "bytes",
                "t_start_s", "t_end_s")
_COMM_TYPES = {"rank": _I64, "step": _I64, "phase": _STR, "op": _STR, "group": _STR, "group_size": _I64,
               "peer": _I64, "dtype": _STR, "numel": _I64, "bytes": _I64, "t_start_s": _F64, "t_end_s": _F64}
# Derived by harness.measure.comm_stats.with_bandwidth (nccl-tests' algbw/busbw), None if untimed.
COMM_DERIVED = ("time_s", "algbw_gbps", "busbw_gbps")
COMM_SCHEMA = pa.schema([_f(c, _COMM_TYPES[c], c not in ("rank", "op", "group", "bytes", "numel"))
                         for c in COMM_COLUMNS] + [_f(c, _F64) for c in COMM_DERIVED])

STAGES_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp", "step")]
    + [_f(c, _F64) for c in ("t_recv_start_s", "t_recv_end_s", "t_compute_end_s", "t_send_end_s")])

_NVML_INT = {"device", "mem_used_bytes", "mem_total_bytes", "sm_clock_mhz", "temperature_c", "throttle_reasons",
             "nvlink_tx_bytes", "nvlink_rx_bytes", "nvlink_tx_delta_bytes", "nvlink_rx_delta_bytes",
             "rss_bytes", "sys_mem_used_bytes"}
NVML_SCHEMA = pa.schema([_f(c, _I64 if c in _NVML_INT else _F64, c not in ("t_s", "device"))
                         for c in NVML_SAMPLE_COLUMNS] + [_f("node", _STR, False)])

MEMORY_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp")]
    + [_f(c, _I64) for c in ("param_bytes", "kv_bytes", "peak_bytes", "predicted_weight_bytes",
                             "predicted_kv_bytes")])

# An external engine's Prometheus /metrics, one row per kept sample per scrape (long format):
# t_s = seconds since the run's start (0 = the scrape just before it), sample = the Prometheus
# sample name (vllm:num_requests_running, vllm:time_to_first_token_seconds_bucket, ...), labels =
# its labels but model_name and le as "k=v,k=v", le = a bucket's bound, value.
SERVER_METRICS_SCHEMA = pa.schema([_f("t_s", _F64, False), _f("sample", _STR, False), _f("labels", _STR),
                                   _f("le", _F64), _f("value", _F64)])

TABLES: dict[str, pa.Schema] = {
    "requests": REQUESTS_SCHEMA, "steps": STEPS_SCHEMA, "comm": COMM_SCHEMA,
    "stages": STAGES_SCHEMA, "nvml": NVML_SCHEMA, "memory": MEMORY_SCHEMA,
    "server_metrics": SERVER_METRICS_SCHEMA,
}

SUMMARY_FILE, SPEC_FILE, ENV_FILE = "summary.json", "spec.yaml", "env.json"
VERDICTS = ("PASS", "FAIL", "UNMEASURED", "INCOMPLETE")
MEASURED_KEYS = ("throughput_rps", "gpu_utilization_pct", "bubble_ratio", "nvlink_utilization_pct",
                 "memory_per_gpu_gb", "memory_balance_epsilon", "tp_allreduce_bytes_per_layer",
                 "pp_sendrecv_bytes_per_stage", "stage_memory_gb", "model_memory_gb", "total_gpus")


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
            schema = schema.append(pa.field(c, pa.string() if pa.types.is_null(inferred) else inferred))
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------- summary.json types
# What each key of summary.json holds, as the readers (report, compare, history, verify-claims) use
# it: a type (or tuple of types), Opt(x) (None allowed), ListOf(x), MapOf(x) (str keys), or
# Fields({key: x}) (the keys it names are typed, missing ones allowed: older runs lack some), OneOf(x, y).
# ``check_types`` names the first value of the wrong type, so a reader never meets one.

class Opt(tuple):
    """None, or the inner form."""
    def __new__(cls, inner):
        return super().__new__(cls, (inner,))


class ListOf(tuple):
    def __new__(cls, inner):
        return super().__new__(cls, (inner,))


class MapOf(tuple):
    def __new__(cls, inner):
        return super().__new__(cls, (inner,))


class Fields(dict):
    pass


class OneOf(tuple):
    """Any one of the inner forms."""
    def __new__(cls, *forms):
        return super().__new__(cls, forms)


NUM = (int, float)
ANY = object
_RANK = Fields({"fits": bool, **{k: int for k in ("rank", "dp", "stage", "tp_rank", "node", "layers")},
                **{k: NUM for k in ("params", "weight_bytes", "kv_bytes_per_token", "workspace_bytes", "kv_budget_bytes",
                                    "kv_token_capacity", "total_bytes", "memory_bytes", "headroom_bytes")}})
_STAGE = Fields({"holds": ListOf(str), "ranks": ListOf(int), "tp_link": Opt(str), "pp_link": Opt(str),
                 **{k: int for k in ("stage", "layers", "first_layer", "last_layer")},
                 **{k: Opt(NUM) for k in ("params_per_rank", "weight_bytes_per_rank", "weight_bytes",
                                          "kv_bytes_per_token_per_rank", "kv_token_capacity",
                                          "tp_allreduces_per_forward", "tp_allreduce_bytes_per_token",
                                          "tp_time_per_token_s", "pp_time_per_token_s")}})
_NUMBERS = OneOf(Opt(NUM), ListOf(Opt(NUM)))
_BOUNDS = Fields({"targets": MapOf(Opt(NUM)), "problems": ListOf(str), "decode_step_s": ListOf(Opt(NUM)),
                  "prefill_per_token_s": ListOf(Opt(NUM)),
                  **{k: Opt(NUM) for k in ("input_mean", "output_mean", "decode_context", "micro_batches",
                                           "bubble_ratio", "kv_rows_limit", "decode_rows", "tpot_floor_s",
                                           "tpot_at_rows_s", "ttft_floor_s", "e2e_floor_s", "rps_bound", "slo_rows",
                                           "rps_slo", "offered_rps")}})
_PREDICTED = Fields({
    "name": str, "dtype": str, "dtype_bytes": int,
    "model": Fields({"name": str, **{k: int for k in ("hidden", "layers", "heads", "kv_heads", "vocab")}}),
    "gpu": Fields({"name": str, **{k: NUM for k in ("memory_bytes", "hbm_gbps", "bf16_tflops", "link_gbps",
                                                    "internode_gbps")}}),
    "cluster": MapOf(NUM), "layout": Fields({"tp": int, "pp": int, "dp": int, "layer_split": ListOf(int)}),
    "run": MapOf(Opt(NUM)), "params_total": NUM, "model_weight_bytes": NUM, "ranks": ListOf(_RANK),
    "stages": ListOf(_STAGE),
    "weight_epsilon": Opt(NUM), "total_epsilon": Opt(NUM), "comm": MapOf(Opt(NUM)),
    "bounds": _BOUNDS, "fits": bool, "problems": ListOf(str)})
SUMMARY_TYPES = Fields({
    "schema_version": int, "complete": bool, "incomplete_reason": Opt(str), "name": Opt(str),
    "started_utc": Opt(str), "finished_utc": Opt(str), "wall_s": Opt(NUM), "warmup_s": Opt(NUM),
    "harness_version": Opt(str),
    "hardware": Fields({"gpu": Opt(str), "gpu_name": Opt(str), "total_gpus": Opt(int), "nodes": Opt(int),
                        "hosts": ListOf(str), "backend": Opt(str)}),
    "layout": Fields({"tp": int, "pp": int, "dp": int, "layer_split": ListOf(int), "micro_batches": Opt(int),
                      "kv_slots_per_replica": Opt(int)}),
    "metrics": MapOf(OneOf(Opt(NUM), MapOf(Opt(NUM)))), "metrics_from_send": Opt(MapOf(Opt(NUM))),
    "slo": ListOf(Fields({"target": str, "measured": Opt(NUM), "passed": Opt(bool), "margin_pct": Opt(NUM)})),
    "verdict": str, "measured": MapOf(_NUMBERS), "predicted": _PREDICTED,
    "stage_stats": ListOf(MapOf(Opt(NUM))), "stage_imbalance": Opt(NUM),
    "cross_checks": ListOf(Fields({"name": str, "ok": bool, "detail": Opt(str)})), "notes": ListOf(str),
    "comm": ListOf(Fields({"group": str, "op": str, "ops": NUM, "bytes": NUM, "time_s": Opt(NUM)})),
    "failure": Opt(Fields({"rank": int, "kind": str, "stage": Opt(int), "signal": Opt(str), "message": Opt(str)})),
    "engine": Opt(MapOf(ANY)),
    "slo_preset": Opt(Fields({"preset": str, "note": str, "min_duration_s": NUM, "duration_s": Opt(NUM),
                              "warning": Opt(str)})),
})


def _is(value: Any, types: Any) -> bool:
    if types is ANY:
        return True
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return any(t is not bool and isinstance(value, t) for t in types if t is not ANY) or ANY in types


def check_types(value: Any, form: Any, path: str) -> str | None:
    """The dotted path of the first value in ``value`` that does not have the type ``form`` says
    (with what it holds instead), or None when every one does. Lists are checked element by element."""
    if isinstance(form, Opt):
        return None if value is None else check_types(value, form[0], path)
    if isinstance(form, OneOf):
        bad = [check_types(value, f, path) for f in form]
        return None if None in bad else bad[0]
    if isinstance(form, ListOf):
        if not isinstance(value, list):
            return f"{path} is {type(value).__name__}, expected a list"
        return next((bad for i, v in enumerate(value) if (bad := check_types(v, form[0], f"{path}[{i}]"))), None)
    if isinstance(form, MapOf):
        if not isinstance(value, dict):
            return f"{path} is {type(value).__name__}, expected an object"
        return next((bad for k, v in value.items() if (bad := check_types(v, form[0], f"{path}.{k}"))), None)
    if isinstance(form, Fields):
        if not isinstance(value, dict):
            return f"{path} is {type(value).__name__}, expected an object"
        return next((bad for k, f in form.items() if k in value and (bad := check_types(value[k], f, f"{path}.{k}"))),
                    None)
    if not _is(value, form):
        return f"{path} is {type(value).__name__}, expected {_names(form)}"
    return None


def _names(form: Any) -> str:
    def flat(f):
        return [n for x in f for n in flat(x)] if isinstance(f, tuple) else [getattr(f, "__name__", str(f))]
    names = list(dict.fromkeys(flat(form)))
    if "int" in names and "float" in names:
        names = ["number" if n == "int" else n for n in names if n != "float"]
    return " or ".join(names)
