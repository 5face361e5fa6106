"""A YAML mapping into a tree of dataclasses, field by field: the field's annotation decides the
conversion (bools from true/false/on/off, whole numbers, finite floats, choices of a Literal in any
case, lists, mappings); an unknown field or a value of the wrong type is one UsageError line naming
its dotted path."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from harness.errors import UsageError, shown

# ---------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if origin is Literal:
        if isinstance(value, bool):  # YAML's false/true where a person meant an "off"/"on" choice
            value = "on" if value else "off"
        match = next(
            (a for a in args if isinstance(value, str) and value.strip().lower() == str(a).lower()),
            None,
        )
        if match is None:
            raise UsageError(
                f"{path}: {shown(value)} is not allowed; use one of {', '.join(map(str, args))}"
            )
        return match
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"{path}: expected a list, got {shown(value)}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{path}: expected a mapping, got {shown(value)}")
        return dict(value)
    if tp is bool:
        word = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
        if isinstance(value, str) and value.strip().lower() in word:
            return word[value.strip().lower()]
        if not isinstance(value, bool):
            raise UsageError(f"{path}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UsageError(f"{path}: expected a whole number, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{path}: expected a number, got {shown(value)}")
        if isinstance(value, int) and abs(value) > 1e300 or not math.isfinite(value):
            raise UsageError(f"{path}: must be a finite number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"{path}: expected text, got {shown(value)}")
        return str(value)
    # a bug in this module, not user input
    raise TypeError(f"unsupported field type {tp} at {path}")


def build_dataclass(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path or 'spec'}: expected a mapping of fields, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        label = key if isinstance(key, str) and len(key) <= 60 else shown(key, 60)
        where = f"{path}.{label}" if path else label
        if key not in known:
            raise UsageError(f"{where}: unknown field; known fields here: {', '.join(known)}")
        kwargs[key] = _convert(hints[key], value, where)
    return cls(**kwargs)
