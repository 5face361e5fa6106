"""Claims of a seed-format markdown report, read from "**Label**: value" lines by label (see RULES).

Each claim keeps its source line and the half unit of its last stated digit (``quantum``) for the
tolerance rule of harness.verdicts.claims.verify. Canonical units: GB = 1e9 bytes, bytes, percent,
fractions (ε, bubble), requests/s.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from harness.verdicts.claims.claim import Claim, ClaimsDoc, number
from harness.verdicts.claims.facts import read_facts

NUM = r"[-+]?\d[\d,]*(?:\.\d+)?"
_BYTE_UNITS = {"b": 1, "byte": 1, "bytes": 1, "kb": 1e3, "kib": 2**10, "mb": 1e6, "mib": 2**20,
               "gb": 1e9, "gib": 2**30}
_GB_UNITS = {"gb": 1.0, "gib": 2**30 / 1e9, "tb": 1e3, "mb": 1e-3, "mib": 2**20 / 1e9}


def _first(rx: str, s: str) -> re.Match | None:
    return re.search(rx, s, re.I)


def _with_unit(value: str, units: str, factors: dict[str, float]) -> tuple[float, float] | None:
    """The first number followed by one of ``units`` (a regex alternation), scaled by its factor."""
    m = _first(rf"({NUM})\s*({units})\b", value)
    if not m:
        return None
    v, q = number(m.group(1))
    f = factors[m.group(2).lower()]
    return v * f, q * f


def _gb_value(value: str) -> tuple[float, float] | None:
    return _with_unit(value, "GB|GiB|TB|MB|MiB", _GB_UNITS)


def _bytes_value(value: str) -> tuple[float, float] | None:
    return _with_unit(value, "bytes?|B|KB|KiB|MB|MiB|GB|GiB", _BYTE_UNITS)


def _pct(value: str) -> tuple[float, float] | None:
    m = _first(rf"({NUM})\s*%", value)
    return number(m.group(1)) if m else None


def _plain(value: str) -> tuple[float, float] | None:
    m = _first(NUM, value)
    return number(m.group(0)) if m else None


Out = list[tuple[str, Any, float, int | None, dict]]   # (id, claimed, quantum, index, context)


def _hardware(label: str, value: str) -> Out:
    out: Out = []
    gb = _first(rf"\(\s*({NUM})\s*GB\s*each", value) or _first(rf"({NUM})\s*GB\b", value)
    if gb:
        v, q = number(gb.group(1))
        out.append(("gpu_memory_gb", v, q, None, {}))
    return out


def _memory_per_gpu(label: str, value: str) -> Out:
    out: Out = []
    gb = _gb_value(value)
    if gb:
        out.append(("memory_per_gpu_gb", gb[0], gb[1], None, {}))
    pct = _first(rf"({NUM})\s*%\s*of\s*({NUM})\s*GB", value) or _first(rf"({NUM})\s*%", value)
    if pct:
        v, q = number(pct.group(1))
        ctx = {"capacity_gb": number(pct.group(2))[0]} if pct.lastindex and pct.lastindex >= 2 else {}
        if gb:
            ctx["memory_per_gpu_gb"] = gb[0]
        out.append(("memory_utilization_pct", v, q, None, ctx))
    return out


def _balance(label: str, value: str) -> Out:
    m = _first(rf"(?:epsilon|ε|eps)\s*[=:]?\s*({NUM})", value)
    if m:
        v, q = number(m.group(1))
        return [("memory_balance_epsilon", v, q, None, {})]
    if _first(r"\bperfect", value):
        return [("memory_balance_epsilon", 0.0, 0.0, None, {"words": "perfect"})]
    return []


def _bubble(label: str, value: str) -> Out:
    if "bubble" not in (label + value).lower():
        pct = _pct(value)   # "Pipeline efficiency: 95%" -> bubble 5 %
        return [("bubble_ratio", 1 - pct[0] / 100, pct[1] / 100, None, {"from": "efficiency"})] if pct else []
    pct = _pct(value)
    if pct:
        return [("bubble_ratio", pct[0] / 100, pct[1] / 100, None, {})]
    v = _plain(value)
    return [("bubble_ratio", v[0], v[1], None, {})] if v else []


def _gpu_list(value: str) -> list[int] | None:
    """'GPUs [0,1]', 'GPUs 0, 1', 'GPUs 0-3' or 'GPUs 0-1, 4-5'."""
    m = _first(r"\[([\d,\s]+)\]", value) or _first(r"GPUs?\s*:?\s*(\d+(?:\s*[,–-]\s*\d+)*)", value)
    if not m:
        return None
    out: list[int] = []
    for item in m.group(1).split(","):
        ends = [int(x) for x in re.split(r"\s*[-–]\s*", item.strip()) if x]
        out += list(range(ends[0], ends[-1] + 1)) if len(ends) == 2 else ends
    return out


def _tp_group(label: str, value: str, index: int) -> Out:
    gpus = _gpu_list(value)
    if gpus is None:
        return []
    ctx: dict = {}
    st = _first(r"stage\s*(\d+)", value)
    if st:
        ctx["stage"] = int(st.group(1))
    ly = _first(r"layers?\s*(\d+)\s*[-–—]\s*(\d+)", value)
    if ly:
        ctx["layers"] = [int(ly.group(1)), int(ly.group(2))]
    return [("tp_group_gpus", gpus, 0.0, index, ctx)]


def _stage(label: str, value: str, index: int) -> Out:
    out: Out = []
    m = _first(r"(\d+)\s*layers?", value)
    if m:
        out.append(("stage_layers", int(m.group(1)), 0.5, index, {}))
    gb = _gb_value(value)
    if gb:
        out.append(("stage_memory_gb", gb[0], gb[1], index, {}))
    return out


def _range_pct(value: str) -> tuple[list[float], float] | None:
    m = _first(rf"({NUM})\s*(?:%\s*)?(?:-|–|to)\s*({NUM})\s*%", value)
    if m:
        (lo, q1), (hi, q2) = number(m.group(1)), number(m.group(2))
        return [lo, hi], max(q1, q2)
    p = _pct(value)
    return ([p[0], p[0]], p[1]) if p else None


def _simple(cid: str, parse: Callable[[str], tuple[float, float] | None]):
    def rule(label: str, value: str) -> Out:
        v = parse(value)
        return [(cid, v[0], v[1], None, {})] if v else []
    return rule


def _slo(label: str, value: str) -> Out:
    r = _range_pct(value)
    return [("slo_margin_pct", r[0], r[1], None, {})] if r else []


def _latency(label: str, value: str) -> Out:
    if _first(r"better|meet|met|within|exceed|below", value):
        return [("latency_slos_met", True, 0.0, None, {})]
    return []


# (label pattern, rule); the first matching pattern reads the line. Indexed labels pass the index.
RULES: list[tuple[str, Callable]] = [
    (r"^total gpus", _simple("total_gpus", _plain)),
    (r"^(available gpus|gpus available|hardware)$", _hardware),
    (r"^(hardware utili[sz]ation|utili[sz]ation|gpu allocation|allocation)$", _simple("gpu_allocation_pct", _pct)),
    (r"^(model memory|model size|model weights|total model memory)", _simple("model_memory_gb", _gb_value)),
    (r"^memory per (gpu|device|rank)", _memory_per_gpu),
    (r"^memory utili[sz]ation", _simple("memory_utilization_pct", _pct)),
    (r"^(memory balance|load balance|memory distribution)", _balance),
    (r"^(throughput|request throughput)", _simple("throughput_rps", _plain)),
    (r"^(gpu|sm|compute) utili[sz]ation", _simple("gpu_utilization_pct", _pct)),
    (r"^nvlink (utili[sz]ation|usage)", _simple("nvlink_utilization_pct", _pct)),
    (r"bubble|^pipeline efficiency", _bubble),
    (r"^tp group (\d+)\b", _tp_group),
    (r"^(?:pp |pipeline )?stage (\d+)\b", _stage),
    (r"all-?reduce|^tensor parallel", _simple("tp_allreduce_bytes_per_layer", _bytes_value)),
    (r"send/?recv|^pipeline parallel|p2p", _simple("pp_sendrecv_bytes_per_stage", _bytes_value)),
    (r"slos?\b", _slo),
    (r"^latency", _latency),
]

_LINE = re.compile(r"^\s*(?:[-*+]|\d+\.)?\s*(.+?)\s*:\s*(.+?)\s*$")


def parse_markdown(text: str, path: str = "report") -> ClaimsDoc:
    doc = ClaimsDoc(path=path, kind="markdown")
    read_facts(doc, text)
    seen: set[tuple[str, int | None]] = set()
    for raw in text.splitlines():
        line = raw.replace("**", "").replace("__", "").strip()
        m = _LINE.match(line)
        if not m or line.startswith("#"):
            continue
        label, value = m.group(1).strip().lower(), m.group(2)
        for pattern, rule in RULES:
            lm = re.search(pattern, label, re.I)
            if not lm:
                continue
            found = rule(label, value, int(lm.group(1))) if lm.re.groups and lm.group(1) and lm.group(1).isdigit() \
                else rule(label, value)
            for cid, claimed, q, index, ctx in found:
                if (cid, index) not in seen:       # a later restatement does not add a claim
                    seen.add((cid, index))
                    doc.claims.append(Claim(cid, claimed, line.lstrip("-*+ ").strip(), index, q, ctx))
            break
    return doc
