"""Spec YAML read as a person means it: the file, and the ``--set FIELD=VALUE`` overrides.

``SpecLoader`` is PyYAML's safe loader with three changes:
  * booleans are only ``true``/``false`` (YAML 1.2): ``instrument: off`` is the mode "off", not
    False; a boolean field still accepts on/off/yes/no (``harness.spec.spec`` converts them);
  * ``1e12`` is a number (YAML 1.1 wants ``1.0e+12``);
  * a key given twice in one mapping is an error (PyYAML keeps the last one silently).
Aliases stay shared references, so an alias bomb costs no memory; error lines show values through
``harness.errors.shown`` (at most ~100 characters)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from harness.errors import UsageError, shown

_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans, exponent floats and no duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {shown(key)} appears twice in one mapping (first on line "
                        f"{seen[key] + 1}); keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
SpecLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str):
    """YAML text → Python values, with :class:`SpecLoader`."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def read_yaml_file(path: str | Path, field: str = "config") -> object:
    """A YAML file's contents; every way it can fail is one ``UsageError`` line naming ``field``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{field}: {path} not found; give a spec YAML such as configs/tiny-tp2-pp4-cpu.yaml"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"{field}: {path} is not a UTF-8 text file; give a spec YAML") from None
    except OSError as e:
        raise UsageError(
            f"{field}: cannot read {path} ({e.strerror or type(e).__name__}); "
            f"give a readable spec YAML"
        ) from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(
            f"{field}: {path}:{where} is not valid YAML ({problem}); fix it there"
        ) from None
    except RecursionError:
        raise UsageError(f"{field}: {path} nests too deeply to be a spec; flatten it") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Dotted overrides from the command line: ``run.max_batch=8``, ``parallel.tp=4``,
    ``workload.rate_rps=1e3``."""
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set {shown(item)}: write FIELD.PATH=VALUE, e.g. run.max_batch=8")
        key, _, text = item.partition("=")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        if not all(parts):
            raise UsageError(
                f"--set {shown(item)}: FIELD.PATH has an empty part; e.g. run.max_batch=8"
            )
        for p in parts[:-1]:
            if node.get(p) is None:  # an empty section in the file ("run:") reads as None
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = value
    return raw
