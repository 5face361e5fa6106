"""Claims of a seed-format markdown report, read from "**Label**: value" lines by label (see RULES).

Each claim keeps its source line, the half unit of its last stated digit (``quantum``) for the
tolerance rule of harness.verdicts.claims.verify, the size unit it was stated in (whose readings,
GB as 10^9 B or GiB ..., harness.verdicts.claims.units gives), the capacity a percentage is "of",
and whether it states a bound ("< 0.05"). Canonical units (decimal reading): GB = 1e9 bytes, bytes,
percent, fractions (ε, bubble), requests/s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import UsageError
from harness.verdicts.claims.claim import Claim, ClaimsDoc, number
from harness.verdicts.claims.facts import read_facts
from harness.verdicts.claims.units import SIZE_UNITS, scale

# A number as written: sign, thousands commas, decimals, exponent ("-3", "32,768", "1e-3", "2.5e9").
# Not inside a word or another number: "H100" holds no 100, and in "13-16%" the "-" is a range, not
# a sign.
NUM = r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_GB_UNITS = r"TiB|GiB|MiB|TB|GB|MB"
_LOWER = (">=", "≥", ">", "over", "above", "at least", "more than", "exceeds")
_BOUND_BEFORE = re.compile(
    r"(<=|≤|<|>=|≥|>|under|below|less than|at most|up to|over|above|at least|more than|"
    r"exceeds)\s*[~≈]?\s*$",
    re.I,
)


@dataclass
class Found:
    """A value read from a line: the claim (canonical units), half a unit of its last digit, the
    size unit as stated, and whether the line states a bound ("< 0.05") rather than a value."""

    value: Any
    quantum: float = 0.0
    unit: str | None = None
    bound: str | None = None


def _first(rx: str, s: str) -> re.Match | None:
    return re.search(rx, s, re.I)


def _bound(value: str, start: int) -> str | None:
    m = _BOUND_BEFORE.search(value[:start])
    if not m:
        return None
    return "lower" if m.group(1).lower() in _LOWER else "upper"


def _unit_name(u: str) -> str:
    u = u.lower()
    if u in ("b", "byte", "bytes"):
        return "bytes"
    return u[0].upper() + ("iB" if u.endswith("ib") else "B")


def _found(
    m: re.Match, value: str, group: int = 1, factor: float = 1.0, unit: str | None = None
) -> Found:
    v, q = number(m.group(group))
    return Found(v * factor, q * factor, unit, _bound(value, m.start(group)))


def _size(value: str, to: str, units: str = SIZE_UNITS) -> Found | None:
    """The first number followed by a size unit, in canonical ``to`` ("gb" or "bytes") units."""
    m = _first(rf"({NUM})\s*({units})\b", value)
    if not m:
        return None
    unit = _unit_name(m.group(2))
    return _found(m, value, factor=scale(unit, to), unit=unit)


def _gb_value(value: str) -> Found | None:
    return _size(value, "gb", _GB_UNITS)


def _bytes_value(value: str) -> Found | None:
    return _size(value, "bytes")


def _pct(value: str) -> Found | None:
    m = _first(rf"({NUM})\s*%", value)
    return _found(m, value) if m else None


def _plain(value: str) -> Found | None:
    m = _first(f"({NUM})", value)
    return _found(m, value) if m else None


def _capacity(value: str) -> tuple[float, str] | None:
    """The capacity a percentage is "of": '43.75% of 80GB', '35GB / 80GB' -> (80.0 canonical GB,
    'GB')."""
    m = _first(
        rf"(?:\bof|/)\s*(?:(?:the|an?|its|total|available|usable|gpu'?s?|hbm\d?e?|memory)\s+)*"
        rf"({NUM})\s*({_GB_UNITS})\b",
        value,
    )
    if not m:
        return None
    unit = _unit_name(m.group(2))
    return number(m.group(1))[0] * scale(unit, "gb"), unit


Out = list[tuple[str, Found, int | None, dict]]  # (id, value, index, context)


def _hardware(label: str, value: str) -> Out:
    m = _first(rf"\(\s*({NUM})\s*({_GB_UNITS})\b[^)]*\beach", value)
    gb = None
    if m:
        unit = _unit_name(m.group(2))
        gb = _found(m, value, factor=scale(unit, "gb"), unit=unit)
    gb = gb or _gb_value(value)
    return [("gpu_memory_gb", gb, None, {})] if gb else []


def _memory_per_gpu(label: str, value: str) -> Out:
    out: Out = []
    gb = _gb_value(value)
    if gb:
        out.append(("memory_per_gpu_gb", gb, None, {}))
    pct = _pct(value)
    if pct:
        ctx: dict = {}
        cap = _capacity(value)
        if cap:
            ctx["capacity"] = cap
        if gb:
            ctx["memory_per_gpu_gb"] = gb.value
        out.append(("memory_utilization_pct", pct, None, ctx))
    return out


def _memory_utilization(label: str, value: str) -> Out:
    pct = _pct(value)
    if not pct:
        return []
    cap = _capacity(value)
    return [("memory_utilization_pct", pct, None, {"capacity": cap} if cap else {})]


def _balance(label: str, value: str) -> Out:
    m = _first(rf"(?:epsilon|ε|eps)\s*(?:[=:≈~]|<=|≤|<|\bis\b|\bof\b)?\s*({NUM})", value)
    if m:
        return [("memory_balance_epsilon", _found(m, value), None, {})]
    if _first(r"\bperfect", value):
        return [("memory_balance_epsilon", Found(0.0), None, {"words": "perfect"})]
    return []


def _bubble(label: str, value: str) -> Out:
    pct = _pct(value)
    if "bubble" not in (label + value).lower():
        # "Pipeline efficiency: 95%" -> bubble 5 % (a bound flips with the complement)
        if not pct:
            return []
        flip = {"upper": "lower", "lower": "upper"}.get(pct.bound)
        return [
            (
                "bubble_ratio",
                Found(1 - pct.value / 100, pct.quantum / 100, None, flip),
                None,
                {"from": "efficiency"},
            )
        ]
    if pct:
        return [
            ("bubble_ratio", Found(pct.value / 100, pct.quantum / 100, None, pct.bound), None, {})
        ]
    v = _plain(value)
    return [("bubble_ratio", v, None, {})] if v else []


MAX_GPUS = 1 << 16  # no cluster a report describes holds more; a wider range is a typo, not a claim


def _gpu_list(value: str) -> list[int] | None:
    """'GPUs [0,1]', 'GPUs [0-7]', 'GPUs 0, 1', 'GPUs 0-3', 'GPUs 0-1, 4-5' or 'GPU 0, GPU 1'."""
    each = re.findall(r"\bGPU[-_ #]?(\d+)\b", value, re.I)
    if len(each) > 1:
        return [int(x) for x in each[:MAX_GPUS]]
    m = _first(r"\[([\d,\s–-]+)\]", value) or _first(
        r"GPUs?\s*:?\s*(\d+(?:\s*[,–-]\s*\d+)*)", value
    )
    if not m:
        return None
    out: list[int] = []
    for item in m.group(1).split(","):
        if not item.strip():
            continue
        ends = [int(x) for x in re.split(r"\s*[-–]\s*", item.strip()) if x]
        if len(ends) == 2 and ends[1] - ends[0] >= MAX_GPUS or len(out) + len(ends) > MAX_GPUS:
            raise UsageError(
                f"GPUs {item.strip()!r} name more than {MAX_GPUS} GPUs; list the group's GPUs"
            )
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
    return [("tp_group_gpus", Found(gpus), index, ctx)]


def _stage(label: str, value: str, index: int) -> Out:
    """'20 layers, 35GB memory'; 'Layers 0-19, 35GB' or a label 'Stage 0 (Layers 0-19)': 20 layers,
    and the range is checked too."""
    out: Out = []
    m = _first(rf"({NUM})\s*layers?\b", value)
    ly = _first(r"layers?\s*(\d+)\s*[-–—]\s*(\d+)", f"{label} {value}")
    ctx = {"layers": [int(ly.group(1)), int(ly.group(2))]} if ly else {}
    if m:
        out.append(("stage_layers", _found(m, value), index, ctx))
    elif ly:
        out.append(
            ("stage_layers", Found(ctx["layers"][1] - ctx["layers"][0] + 1, 0.5), index, ctx)
        )
    gb = _gb_value(value)
    if gb:
        out.append(("stage_memory_gb", gb, index, {}))
    return out


def _range_pct(value: str) -> Found | None:
    m = _first(rf"({NUM})\s*(?:%\s*)?(?:-|–|to)\s*({NUM})\s*%", value)
    if m:
        (lo, q1), (hi, q2) = number(m.group(1)), number(m.group(2))
        return Found([lo, hi], max(q1, q2))
    p = _pct(value)
    return Found([p.value, p.value], p.quantum) if p else None


def _simple(cid: str, parse: Callable[[str], Found | None]):
    def rule(label: str, value: str) -> Out:
        v = parse(value)
        return [(cid, v, None, {})] if v else []

    return rule


def _slo(label: str, value: str) -> Out:
    r = _range_pct(value)
    return [("slo_margin_pct", r, None, {})] if r else []


def _latency(label: str, value: str) -> Out:
    if _first(r"better|meet|met|within|exceed|below", value):
        return [("latency_slos_met", Found(True), None, {})]
    return []


# (label pattern, rule); the first matching pattern reads the line. Indexed labels pass the index.
RULES: list[tuple[str, Callable]] = [
    (r"^(total gpus|gpus required|number of gpus|gpu count)", _simple("total_gpus", _plain)),
    (r"^(available gpus|gpus available|hardware|gpus?|gpu type|gpu model)$", _hardware),
    (
        r"^(hardware utili[sz]ation|utili[sz]ation|gpu allocation|allocation)$",
        _simple("gpu_allocation_pct", _pct),
    ),
    (
        r"^(model memory|model size|model weights|total model memory)",
        _simple("model_memory_gb", _gb_value),
    ),
    (
        r"^(memory|memory usage|memory required|weight memory|weights memory) per "
        r"(gpu|device|rank)|^per-gpu memory",
        _memory_per_gpu,
    ),
    (r"^(gpu )?memory (utili[sz]ation|efficiency)", _memory_utilization),
    (r"^(memory balance|load balance|memory distribution)", _balance),
    (
        r"^(expected |estimated |measured |achieved |overall )?(request )?throughput",
        _simple("throughput_rps", _plain),
    ),
    (
        r"^(average |mean |expected |estimated )?(gpu|sm|compute) utili[sz]ation",
        _simple("gpu_utilization_pct", _pct),
    ),
    (r"^nvlink\b.*(utili[sz]ation|usage)", _simple("nvlink_utilization_pct", _pct)),
    (r"bubble|^pipeline efficiency", _bubble),
    (r"^tp group (\d+)\b", _tp_group),
    (r"^(?:pp |pipeline )?stage (\d+)\b", _stage),
    (r"all-?reduce|^tensor parallel", _simple("tp_allreduce_bytes_per_layer", _bytes_value)),
    (
        r"send/?recv|^pipeline (parallel|communication)|p2p|^activation "
        r"(transfer|communication|size)",
        _simple("pp_sendrecv_bytes_per_stage", _bytes_value),
    ),
    (r"slos?\b", _slo),
    (r"^latency", _latency),
]

_LINE = re.compile(r"^\s*(?:[-*+]|\d+\.)?\s*(.+?)\s*:\s*(.+?)\s*$")


def parse_markdown(text: str, path: str = "report") -> ClaimsDoc:
    doc = ClaimsDoc(path=path, kind="markdown")
    read_facts(doc, text)
    seen: set[tuple[str, int | None]] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.replace("**", "").replace("__", "").strip()
        m = _LINE.match(line)
        if not m or line.startswith("#"):
            continue
        label, value = m.group(1).strip().lower(), m.group(2)
        for pattern, rule in RULES:
            lm = re.search(pattern, label, re.I)
            if not lm:
                continue
            try:
                found = (
                    rule(label, value, int(lm.group(1)))
                    if lm.re.groups and lm.group(1) and lm.group(1).isdigit()
                    else rule(label, value)
                )
            except UsageError as e:
                raise UsageError(
                    f"report: {path} line {lineno} ({m.group(1).strip()[:40]}): {e}"
                ) from None
            for cid, f, index, ctx in found:
                if (cid, index) not in seen:  # a later restatement does not add a claim
                    seen.add((cid, index))
                    doc.claims.append(
                        Claim(
                            cid,
                            f.value,
                            line.lstrip("-*+ ").strip(),
                            index,
                            f.quantum,
                            ctx,
                            f.unit,
                            f.bound,
                        )
                    )
            break
    return doc
