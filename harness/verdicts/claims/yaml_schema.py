"""Claims of a claims YAML (docs/claims.md): the document keys, one claim per id, each value checked
against its id's shape (number, [low, high], per-stage/per-group list or mapping, true/false)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.errors import UsageError, shown
from harness.verdicts.claims.claim import CLAIM_IDS, PER_GROUP, PER_STAGE, Claim, ClaimsDoc, number
from harness.verdicts.claims.facts import GPU_NAMES, STRATEGY, read_facts


def _quantum_of(v: Any) -> float:
    if isinstance(v, str):
        return number(v)[1]
    return number(repr(float(v)).rstrip("0").rstrip(".") if isinstance(v, float) else str(v))[1]


def _count(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
        raise UsageError(f"{where}: give a whole number >= 1, got {shown(v)}")
    return v


_DOC_KEYS = ("schema_version", "model", "dtype", "hardware", "strategy", "config", "claims")


def parse_yaml(data: dict, path: str) -> ClaimsDoc:
    unknown = [k for k in data if k not in _DOC_KEYS]
    if unknown:
        raise UsageError(f"{path}: {unknown[0]}: unknown key; use {', '.join(_DOC_KEYS)}")
    if data.get("schema_version", 1) != 1:
        raise UsageError(f"{path}: schema_version: {data['schema_version']!r} unknown; use 1")
    doc = ClaimsDoc(path=path, kind="yaml")
    if data.get("model") is not None:
        doc.model = str(data["model"])
    if data.get("dtype") is not None:
        doc.dtype = str(data["dtype"]).lower()
    hw = data.get("hardware")
    if isinstance(hw, str):
        read_facts(doc, hw)
    elif isinstance(hw, dict):
        g = str(hw.get("gpu", ""))
        doc.gpu = GPU_NAMES.get(g.lower(), g) or None
        doc.nodes = _count(hw.get("nodes"), f"{path}: hardware.nodes")
        doc.gpus_per_node = _count(hw.get("gpus_per_node"), f"{path}: hardware.gpus_per_node")
        if doc.nodes and doc.gpus_per_node:
            doc.total_gpus = doc.nodes * doc.gpus_per_node
    elif hw is not None:
        raise UsageError(
            f"{path}: hardware: give a mapping {{gpu, nodes, gpus_per_node}} or text like '8x H100'"
        )
    st = data.get("strategy")
    if isinstance(st, str):
        m = STRATEGY.search(st)
        if not m:
            raise UsageError(f"{path}: strategy: cannot read {st!r}; write e.g. TP2-PP4-DP1")
        doc.strategy = dict(zip(("tp", "pp", "dp", "ep"), (int(g) if g else 1 for g in m.groups())))
    elif isinstance(st, dict):
        bad = [k for k in st if k not in ("tp", "pp", "dp", "ep")]
        if bad or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20
            for v in st.values()
        ):
            raise UsageError(f"{path}: strategy: give tp, pp, dp (ep) as whole numbers >= 1")
        doc.strategy = {"tp": 1, "pp": 1, "dp": 1, "ep": 1, **st}
    if data.get("config") is not None:
        doc.config = str((Path(path).parent / str(data["config"])).resolve())
    claims = data.get("claims")
    if not isinstance(claims, dict) or not claims:
        raise UsageError(
            f"{path}: claims: give a mapping of claim id -> value; ids: {', '.join(CLAIM_IDS)}"
        )
    for cid, value in claims.items():
        doc.claims.extend(_yaml_claim(str(cid), value, path))
    return doc


def _yaml_claim(cid: str, value: Any, path: str) -> list[Claim]:
    where = f"{path}: claims.{cid}"
    if cid not in CLAIM_IDS:
        raise UsageError(f"{where}: unknown claim id; use one of {', '.join(CLAIM_IDS)}")
    if cid in PER_STAGE or cid in PER_GROUP:
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else None
        )
        if items is None:
            raise UsageError(
                f"{where}: give a list (one value per {'stage' if cid in PER_STAGE else 'group'}) "
                "or a mapping index -> value"
            )
        out = []
        for i, v in items:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 1 << 20:
                raise UsageError(f"{where}: index {i!r} must be a whole number >= 0")
            if cid in PER_GROUP:
                if (
                    not isinstance(v, list)
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                    or len(v) > 1 << 16
                ):
                    raise UsageError(
                        f"{where}[{i}]: give the group's GPU indices as a list, e.g. [0, 1]"
                    )
                out.append(Claim(cid, list(v), f"{cid}[{i}]: {v}", i, 0.0))
            else:
                out.append(
                    Claim(cid, _num(v, f"{where}[{i}]"), f"{cid}[{i}]: {v}", i, _quantum_of(v))
                )
        return out
    if cid == "latency_slos_met":
        if not isinstance(value, bool):
            raise UsageError(f"{where}: give true or false")
        return [Claim(cid, value, f"{cid}: {value}")]
    if cid == "slo_margin_pct" and isinstance(value, list):
        if len(value) != 2:
            raise UsageError(f"{where}: give one number or [low, high]")
        lo, hi = (_num(v, where) for v in value)
        return [Claim(cid, [lo, hi], f"{cid}: {value}", None, max(_quantum_of(v) for v in value))]
    v = _num(value, where)
    if cid == "slo_margin_pct":
        return [Claim(cid, [v, v], f"{cid}: {value}", None, _quantum_of(value))]
    # The schema fixes GB = 1e9 B, except for a GPU's capacity: its nominal "80" is binary as often
    # as not.
    unit = "GB" if cid == "gpu_memory_gb" else None
    return [Claim(cid, v, f"{cid}: {value}", None, _quantum_of(value), unit=unit)]


def _num(v: Any, where: str) -> float:
    """A finite number; text that reads as one too (PyYAML reads 2.5e9, without a '.', as text)."""
    if isinstance(v, str):
        try:
            return float(number(v, where)[0])
        except UsageError:
            raise UsageError(f"{where}: expected a number, got {shown(v)}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UsageError(f"{where}: expected a number, got {shown(v)}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise UsageError(f"{where}: {shown(v)} is not a finite number; give the claimed value")
    return f
