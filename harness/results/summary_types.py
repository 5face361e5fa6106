"""What each key of summary.json holds, as the readers (report, compare, history, verify-claims) use
it: a type (or tuple of types), Opt(x) (None allowed), ListOf(x), MapOf(x) (str keys), or
Fields({key: x}) (the keys it names are typed, missing ones allowed: older runs lack some),
OneOf(x, y). ``check_types`` names the first value of the wrong type, so a reader never
meets one."""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------- summary.json types
# What each key of summary.json holds, as the readers (report, compare, history, verify-claims) use
# it: a type (or tuple of types), Opt(x) (None allowed), ListOf(x), MapOf(x) (str keys), or
# Fields({key: x}) (the keys it names are typed, missing ones allowed: older runs lack some),
# OneOf(x, y).
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
_RANK = Fields(
    {
        "fits": bool,
        **{k: int for k in ("rank", "dp", "stage", "tp_rank", "node", "layers")},
        **{
            k: NUM
            for k in (
                "params",
                "weight_bytes",
                "kv_bytes_per_token",
                "workspace_bytes",
                "kv_budget_bytes",
                "kv_token_capacity",
                "total_bytes",
                "memory_bytes",
                "headroom_bytes",
            )
        },
    }
)
_STAGE = Fields(
    {
        "holds": ListOf(str),
        "ranks": ListOf(int),
        "tp_link": Opt(str),
        "pp_link": Opt(str),
        **{k: int for k in ("stage", "layers", "first_layer", "last_layer")},
        **{
            k: Opt(NUM)
            for k in (
                "params_per_rank",
                "weight_bytes_per_rank",
                "weight_bytes",
                "kv_bytes_per_token_per_rank",
                "kv_token_capacity",
                "tp_allreduces_per_forward",
                "tp_allreduce_bytes_per_token",
                "tp_time_per_token_s",
                "pp_time_per_token_s",
            )
        },
    }
)
_NUMBERS = OneOf(Opt(NUM), ListOf(Opt(NUM)))
_BOUNDS = Fields(
    {
        "targets": MapOf(Opt(NUM)),
        "problems": ListOf(str),
        "decode_step_s": ListOf(Opt(NUM)),
        "prefill_per_token_s": ListOf(Opt(NUM)),
        **{
            k: Opt(NUM)
            for k in (
                "input_mean",
                "output_mean",
                "decode_context",
                "micro_batches",
                "bubble_ratio",
                "kv_rows_limit",
                "decode_rows",
                "tpot_floor_s",
                "tpot_at_rows_s",
                "ttft_floor_s",
                "e2e_floor_s",
                "rps_bound",
                "slo_rows",
                "rps_slo",
                "offered_rps",
            )
        },
    }
)
_PREDICTED = Fields(
    {
        "name": str,
        "dtype": str,
        "dtype_bytes": int,
        "model": Fields(
            {"name": str, **{k: int for k in ("hidden", "layers", "heads", "kv_heads", "vocab")}}
        ),
        "gpu": Fields(
            {
                "name": str,
                **{
                    k: NUM
                    for k in (
                        "memory_bytes",
                        "hbm_gbps",
                        "bf16_tflops",
                        "link_gbps",
                        "internode_gbps",
                    )
                },
            }
        ),
        "cluster": MapOf(NUM),
        "layout": Fields({"tp": int, "pp": int, "dp": int, "layer_split": ListOf(int)}),
        "run": MapOf(Opt(NUM)),
        "params_total": NUM,
        "model_weight_bytes": NUM,
        "ranks": ListOf(_RANK),
        "stages": ListOf(_STAGE),
        "weight_epsilon": Opt(NUM),
        "total_epsilon": Opt(NUM),
        "comm": MapOf(Opt(NUM)),
        "bounds": _BOUNDS,
        "fits": bool,
        "problems": ListOf(str),
    }
)
_INTERVAL = Fields({"low": Opt(NUM), "high": Opt(NUM), "confidence": NUM, "method": str, "n": int})
SUMMARY_TYPES = Fields(
    {
        "schema_version": int,
        "complete": bool,
        "incomplete_reason": Opt(str),
        "name": Opt(str),
        "started_utc": Opt(str),
        "finished_utc": Opt(str),
        "wall_s": Opt(NUM),
        "warmup_s": Opt(NUM),
        "harness_version": Opt(str),
        "hardware": Fields(
            {
                "gpu": Opt(str),
                "gpu_name": Opt(str),
                "total_gpus": Opt(int),
                "nodes": Opt(int),
                "hosts": ListOf(str),
                "backend": Opt(str),
            }
        ),
        "layout": Fields(
            {
                "tp": int,
                "pp": int,
                "dp": int,
                "layer_split": ListOf(int),
                "micro_batches": Opt(int),
                "kv_slots_per_replica": Opt(int),
            }
        ),
        "metrics": MapOf(OneOf(Opt(NUM), MapOf(Opt(NUM)))),
        "metrics_from_send": Opt(MapOf(Opt(NUM))),
        "slo": ListOf(
            Fields(
                {
                    "target": str,
                    "measured": Opt(NUM),
                    "passed": Opt(bool),
                    "margin_pct": Opt(NUM),
                    "verdict": str,
                    "low": Opt(NUM),
                    "high": Opt(NUM),
                    "confidence": NUM,
                    "rule": str,
                    "n": int,
                    "over": Opt(int),
                    "more_requests": Opt(int),
                }
            )
        ),
        "intervals": Fields({"confidence": NUM, "metrics": MapOf(_INTERVAL)}),
        "verdict": str,
        "measured": MapOf(_NUMBERS),
        "predicted": _PREDICTED,
        "stage_stats": ListOf(MapOf(Opt(NUM))),
        "stage_imbalance": Opt(NUM),
        "cross_checks": ListOf(Fields({"name": str, "ok": bool, "detail": Opt(str)})),
        "notes": ListOf(str),
        "comm": ListOf(
            Fields({"group": str, "op": str, "ops": NUM, "bytes": NUM, "time_s": Opt(NUM)})
        ),
        "failure": Opt(
            Fields(
                {
                    "rank": int,
                    "kind": str,
                    "stage": Opt(int),
                    "signal": Opt(str),
                    "message": Opt(str),
                }
            )
        ),
        "engine": Opt(MapOf(ANY)),
        "slo_preset": Opt(
            Fields(
                {
                    "preset": str,
                    "note": str,
                    "min_duration_s": NUM,
                    "duration_s": Opt(NUM),
                    "warning": Opt(str),
                }
            )
        ),
    }
)


def _is(value: Any, types: Any) -> bool:
    if types is ANY:
        return True
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return (
        any(t is not bool and isinstance(value, t) for t in types if t is not ANY) or ANY in types
    )


def check_types(value: Any, form: Any, path: str) -> str | None:
    """The dotted path of the first value in ``value`` that does not have the type ``form`` says
    (with what it holds instead), or None when every one does. Lists are checked element by
    element."""
    if isinstance(form, Opt):
        return None if value is None else check_types(value, form[0], path)
    if isinstance(form, OneOf):
        bad = [check_types(value, f, path) for f in form]
        return None if None in bad else bad[0]
    if isinstance(form, ListOf):
        if not isinstance(value, list):
            return f"{path} is {type(value).__name__}, expected a list"
        return next(
            (bad for i, v in enumerate(value) if (bad := check_types(v, form[0], f"{path}[{i}]"))),
            None,
        )
    if isinstance(form, MapOf):
        if not isinstance(value, dict):
            return f"{path} is {type(value).__name__}, expected an object"
        return next(
            (bad for k, v in value.items() if (bad := check_types(v, form[0], f"{path}.{k}"))), None
        )
    if isinstance(form, Fields):
        if not isinstance(value, dict):
            return f"{path} is {type(value).__name__}, expected an object"
        return next(
            (
                bad
                for k, f in form.items()
                if k in value and (bad := check_types(value[k], f, f"{path}.{k}"))
            ),
            None,
        )
    if not _is(value, form):
        return f"{path} is {type(value).__name__}, expected {_names(form)}"
    return None


def _names(form: Any) -> str:
    def flat(f):
        return (
            [n for x in f for n in flat(x)]
            if isinstance(f, tuple)
            else [getattr(f, "__name__", str(f))]
        )

    names = list(dict.fromkeys(flat(form)))
    if "int" in names and "float" in names:
        names = ["number" if n == "int" else n for n in names if n != "float"]
    return " or ".join(names)
