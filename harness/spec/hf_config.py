"""A Hugging Face Llama ``config.json`` -> ``ModelShape``, read by transformers' own ``LlamaConfig``
(a local file; no hub access), so that every field the file leaves out takes the library's default
(``max_position_embeddings`` 2048, ``rms_norm_eps`` 1e-6, ``rope_theta`` 10000, ...), exactly what
``LlamaForCausalLM`` would build from the same file.

Then it is checked in full, before any rank starts (``UsageError``: one line naming the field):
sizes are whole numbers >= 1 and consistent (heads a multiple of KV heads, an even head_dim, a
hidden size the heads divide when head_dim is not given), and what the reference model does not
implement is refused rather than run wrongly: biases on the attention or MLP projections, an
activation other than SiLU, a rope other than the default or Llama 3.1's ``llama3`` scaling (whose
four fields must all be there)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from harness.errors import UsageError, shown
from harness.spec.catalog import ModelShape
from harness.spec.json_file import read_json_file

SIZES = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "head_dim",
)
MAX_SIZE = 2**31 - 1  # torch indexes with int64, but no dimension of a real model comes near int32
LLAMA3_ROPE = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
ACTIVATIONS = ("silu", "swish")  # transformers' ACT2FN: both are x * sigmoid(x)


def model_from_hf_config(path: str | Path, field: str = "model.config") -> ModelShape:
    """Read a Hugging Face Llama ``config.json`` (a file, or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    raw = read_json_file(p, field, "give a Hugging Face config.json or a preset name", name=path)
    _check_raw(raw, p, field)
    return _shape(_llama_config(raw, p, field), raw, p, field)


def _positive(raw: dict, key: str, p: Path, field: str) -> None:
    v = raw.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UsageError(f"{field}: {p}: {key} = {shown(v)}; it must be a finite number > 0")


def _check_raw(raw: dict, p: Path, field: str) -> None:
    """What must hold before transformers computes with the values (it divides by the head
    count)."""
    kind = raw.get("model_type", "llama")
    if kind != "llama":
        raise UsageError(
            f"{field}: {p}: model_type {shown(kind)} is not supported; only Llama configs are"
        )
    for key in SIZES:
        v = raw.get(key)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIZE
        ):
            raise UsageError(
                f"{field}: {p}: {key} = {shown(v)}; it must be a whole number in 1..{MAX_SIZE}"
            )
    for key in ("rms_norm_eps", "rope_theta"):
        _positive(raw, key, p, field)
    _consistent(
        raw.get("hidden_size"),
        raw.get("num_attention_heads"),
        raw.get("num_key_value_heads"),
        raw.get("head_dim"),
        f"{field}: {p}",
    )
    act = raw.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise UsageError(
            f"{field}: {p}: hidden_act {shown(act)} is not implemented (the MLP is SiLU-gated); "
            "use a config with hidden_act silu"
        )
    for key in ("attention_bias", "mlp_bias"):
        if raw.get(key) not in (None, False):
            raise UsageError(
                f"{field}: {p}: {key} = {shown(raw[key])}: projections with biases are not "
                f"implemented (their bias would never be loaded); use {key}: false"
            )
    if raw.get("tie_word_embeddings") not in (None, True, False):
        raise UsageError(
            f"{field}: {p}: tie_word_embeddings = {shown(raw['tie_word_embeddings'])}; "
            "give true or false"
        )
    for key in ("rope_scaling", "rope_parameters"):
        rs = raw.get(key)
        if rs is None:
            continue
        if not isinstance(rs, dict):
            raise UsageError(
                f"{field}: {p}: {key} = {shown(rs)}; give a mapping with rope_type, or null"
            )
        _check_rope(rs, f"{field}: {p}: {key}")


def _check_rope(rs: dict, where: str) -> None:
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind in (None, "default"):
        return
    if kind != "llama3":
        raise UsageError(
            f"{where}.rope_type {shown(kind)} is not implemented; use llama3 or the default rope"
        )
    missing = [k for k in LLAMA3_ROPE if rs.get(k) is None]
    if missing:
        raise UsageError(
            f"{where}: llama3 rope scaling lacks {', '.join(missing)}; it needs "
            f"{', '.join(LLAMA3_ROPE)}"
        )
    for k in LLAMA3_ROPE:
        v = rs[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UsageError(f"{where}.{k} = {shown(v)}; it must be a finite number > 0")
    if not rs["low_freq_factor"] < rs["high_freq_factor"]:
        raise UsageError(
            f"{where}: low_freq_factor {rs['low_freq_factor']} must be below high_freq_factor "
            f"{rs['high_freq_factor']}"
        )


def _llama_config(raw: dict, p: Path, field: str):
    from transformers import LlamaConfig
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    # its rope warnings would print once per rank; errors still raise
    hf_logging.set_verbosity_error()
    try:
        return LlamaConfig.from_dict(dict(raw))
    except (
        Exception
    ) as e:  # transformers' own validation raises KeyError, ValueError, TypeError ...
        msg = re.sub(r"^.*validator '\w+': (\w+Error: )?", "", " ".join(str(e).split()))
        raise UsageError(
            f"{field}: {p}: transformers' LlamaConfig refuses it: "
            f"{msg if len(msg) <= 140 else msg[:137] + '...'}"
        ) from None
    finally:
        hf_logging.set_verbosity(level)


def _rope(cfg) -> tuple[float, dict | None]:
    """(theta, llama3 scaling or None) from transformers 4.x (rope_theta, rope_scaling) or 5.x
    (rope_parameters)."""
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    theta = params.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "default":
        return float(theta), None
    return float(theta), {"rope_type": kind, **{k: params[k] for k in LLAMA3_ROPE}}


def _consistent(hidden, heads, kv, head_dim, where: str) -> None:
    """Sizes that fit together (None: not known yet, the library's default comes later)."""
    if head_dim is None and None not in (hidden, heads) and hidden % heads:
        raise UsageError(
            f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; "
            "give head_dim or fix the sizes"
        )
    if None not in (heads, kv) and heads % kv:
        raise UsageError(
            f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
        )
    if head_dim is not None and head_dim % 2:
        raise UsageError(
            f"{where}: head_dim {head_dim} is odd; the rotary embedding rotates pairs of dimensions"
        )


def _shape(cfg, raw: dict, p: Path, field: str) -> ModelShape:
    heads, kv, hidden = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads or cfg.num_attention_heads,
        cfg.hidden_size,
    )
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    where = f"{field}: {p}"
    _consistent(hidden, heads, kv, raw.get("head_dim"), where)
    _consistent(hidden, heads, kv, head_dim, where)
    theta, scaling = _rope(cfg)
    if scaling is not None:
        _check_rope(scaling, f"{where}: rope")
    try:
        return ModelShape(
            name=str(raw.get("_name_or_path") or p.parent.name or "hf-config"),
            hidden=hidden,
            num_layers=cfg.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            intermediate=cfg.intermediate_size,
            vocab=cfg.vocab_size,
            max_context=cfg.max_position_embeddings,
            rope_theta=theta,
            rms_norm_eps=float(cfg.rms_norm_eps),
            tie_embeddings=bool(cfg.tie_word_embeddings),
            rope_scaling=scaling,
        )
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: a size is not a number ({e})") from None
