"""Read a strategy report into claims: a claims YAML (docs/claims.md) or a seed-format markdown report.

Markdown: the model, hardware and strategy are found anywhere in the text ("Llama3-70B-Instruct",
"H100-8GPU", "8x H100 (80GB each)", "2 nodes x 8 H200", "TP2-PP4-DP1"); claims are read from
"**Label**: value" lines by label (see RULES). Each claim keeps its source line and the half unit
of its last stated digit (``quantum``) for the tolerance rule of harness.claims.verify.
Canonical units: GB = 1e9 bytes, bytes, percent, fractions (ε, bubble), requests/s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from harness.errors import UsageError

CLAIM_IDS = (
    "total_gpus", "gpu_memory_gb", "model_memory_gb", "memory_per_gpu_gb", "memory_utilization_pct",
    "memory_balance_epsilon", "throughput_rps", "gpu_utilization_pct", "bubble_ratio",
    "tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage", "nvlink_utilization_pct",
    "stage_layers", "tp_group_gpus", "stage_memory_gb",
    # ids of our own (docs/claims.md): GPUs used / available, and the report's SLO sentences
    "gpu_allocation_pct", "slo_margin_pct", "latency_slos_met",
)
PER_STAGE = ("stage_layers", "stage_memory_gb")
PER_GROUP = ("tp_group_gpus",)

NUM = r"[-+]?\d[\d,]*(?:\.\d+)?"
_BYTE_UNITS = {"b": 1, "byte": 1, "bytes": 1, "kb": 1e3, "kib": 2**10, "mb": 1e6, "mib": 2**20,
               "gb": 1e9, "gib": 2**30}
_GB_UNITS = {"gb": 1.0, "gib": 2**30 / 1e9, "tb": 1e3, "mb": 1e-3, "mib": 2**20 / 1e9}
GPU_NAMES = {"h100": "H100-SXM-80GB", "h200": "H200-SXM-141GB", "a100": "A100-SXM-80GB"}


@dataclass
class Claim:
    id: str
    claimed: Any                  # float | list[int] | [lo, hi] | bool, in canonical units
    text: str                     # the source line, markdown stripped
    index: int | None = None      # stage (per-stage ids) or TP group (tp_group_gpus)
    quantum: float = 0.0          # half a unit of the last stated digit, canonical units
    context: dict = field(default_factory=dict)   # e.g. {"stage": 0, "layers": [0, 19]}


@dataclass
class ClaimsDoc:
    path: str
    kind: str                     # markdown | yaml
    model: str | None = None      # as named, e.g. "llama3-70b-instruct"
    dtype: str | None = None
    gpu: str | None = None        # catalogue name
    total_gpus: int | None = None     # GPUs the hardware line names
    nodes: int | None = None
    gpus_per_node: int | None = None
    strategy: dict | None = None  # {tp, pp, dp, ep}
    config: str | None = None     # a spec path named by a claims YAML (absolute)
    claims: list[Claim] = field(default_factory=list)


def number(text: str) -> tuple[float, float]:
    """'32,768' -> (32768, 0.5); '43.75' -> (43.75, 0.005): the value (int when written without a
    decimal point) and half a unit of its last digit."""
    t = text.replace(",", "")
    if "." not in t:
        return int(t), 0.5
    return float(t), 0.5 * 10.0 ** -len(t.split(".")[1])


def _quantum_of(v: Any) -> float:
    return number(repr(float(v)).rstrip("0").rstrip(".") if isinstance(v, float) else str(v))[1]


# ---------------------------------------------------------------- whole-text facts

_MODEL = re.compile(r"\b(?:meta[-\s]?)?llama[-\s]?(\d(?:\.\d)?)[-\s]?(\d+)\s*b(?:[-\s]?(instruct|chat))?\b", re.I)
_STRATEGY = re.compile(r"\bTP\s*(\d+)\s*[-_x× ]?\s*PP\s*(\d+)(?:\s*[-_x× ]?\s*DP\s*(\d+))?"
                       r"(?:\s*[-_x× ]?\s*EP\s*(\d+))?", re.I)
_STRATEGY_SPELLED = re.compile(r"(\d+)\s*TP\s*[x×*]\s*(\d+)\s*PP(?:\s*[x×*]\s*(\d+)\s*DP)?"
                               r"(?:\s*[x×*]\s*(\d+)\s*EP)?", re.I)
_GPU_COUNT = [re.compile(r"\b(H100|H200|A100)[-\s]?(\d+)\s*GPUs?\b", re.I),
              re.compile(r"\b(\d+)\s*[x×]\s*(?:NVIDIA\s+)?(H100|H200|A100)\b", re.I)]
_NODES = re.compile(r"\b(\d+)\s*nodes?\b(?:\s*[x×]\s*(\d+))?", re.I)
_DTYPE = re.compile(r"\b(bf16|fp16|fp32|bfloat16|float16|float32)\b", re.I)


def _facts(doc: ClaimsDoc, text: str) -> None:
    m = _MODEL.search(text)
    if m:
        doc.model = f"llama{m.group(1)}-{m.group(2)}b" + (f"-{m.group(3).lower()}" if m.group(3) else "")
    m = _STRATEGY.search(text) or _STRATEGY_SPELLED.search(text)
    if m:
        tp, pp, dp, ep = (int(g) if g else 1 for g in m.groups())
        doc.strategy = {"tp": tp, "pp": pp, "dp": dp, "ep": ep}
    for rx in _GPU_COUNT:
        m = rx.search(text)
        if m:
            a, b = m.groups()
            name, count = (a, b) if not a.isdigit() else (b, a)
            doc.gpu, doc.total_gpus = GPU_NAMES[name.lower()], int(count)
            break
    if doc.gpu is None:
        m = re.search(r"\b(H100|H200|A100)\b", text, re.I)
        doc.gpu = GPU_NAMES[m.group(1).lower()] if m else None
    m = _NODES.search(text)
    if m:
        doc.nodes = int(m.group(1))
        if m.group(2):
            doc.gpus_per_node = int(m.group(2))
    m = _DTYPE.search(text)
    if m:
        word = m.group(1).lower()
        doc.dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(word, word)


# ---------------------------------------------------------------- markdown claim lines

def _first(rx: str, s: str) -> re.Match | None:
    return re.search(rx, s, re.I)


def _gb_value(value: str) -> tuple[float, float] | None:
    m = _first(rf"({NUM})\s*(GB|GiB|TB|MB|MiB)\b", value)
    if not m:
        return None
    v, q = number(m.group(1))
    f = _GB_UNITS[m.group(2).lower()]
    return v * f, q * f


def _bytes_value(value: str) -> tuple[float, float] | None:
    m = _first(rf"({NUM})\s*(bytes?|B|KB|KiB|MB|MiB|GB|GiB)\b", value)
    if not m:
        return None
    v, q = number(m.group(1))
    f = _BYTE_UNITS[m.group(2).lower()]
    return v * f, q * f


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
    _facts(doc, text)
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


# ---------------------------------------------------------------- claims YAML

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
        _facts(doc, hw)
    elif isinstance(hw, dict):
        g = str(hw.get("gpu", ""))
        doc.gpu = GPU_NAMES.get(g.lower(), g) or None
        doc.nodes, doc.gpus_per_node = hw.get("nodes"), hw.get("gpus_per_node")
        if doc.nodes and doc.gpus_per_node:
            doc.total_gpus = int(doc.nodes) * int(doc.gpus_per_node)
    elif hw is not None:
        raise UsageError(f"{path}: hardware: give a mapping {{gpu, nodes, gpus_per_node}} or text like '8x H100'")
    st = data.get("strategy")
    if isinstance(st, str):
        m = _STRATEGY.search(st)
        if not m:
            raise UsageError(f"{path}: strategy: cannot read {st!r}; write e.g. TP2-PP4-DP1")
        doc.strategy = dict(zip(("tp", "pp", "dp", "ep"), (int(g) if g else 1 for g in m.groups())))
    elif isinstance(st, dict):
        bad = [k for k in st if k not in ("tp", "pp", "dp", "ep")]
        if bad or not all(isinstance(v, int) and v >= 1 for v in st.values()):
            raise UsageError(f"{path}: strategy: give tp, pp, dp (ep) as whole numbers >= 1")
        doc.strategy = {"tp": 1, "pp": 1, "dp": 1, "ep": 1, **st}
    if data.get("config") is not None:
        doc.config = str((Path(path).parent / str(data["config"])).resolve())
    claims = data.get("claims")
    if not isinstance(claims, dict) or not claims:
        raise UsageError(f"{path}: claims: give a mapping of claim id -> value; ids: {', '.join(CLAIM_IDS)}")
    for cid, value in claims.items():
        doc.claims.extend(_yaml_claim(str(cid), value, path))
    return doc


def _yaml_claim(cid: str, value: Any, path: str) -> list[Claim]:
    where = f"{path}: claims.{cid}"
    if cid not in CLAIM_IDS:
        raise UsageError(f"{where}: unknown claim id; use one of {', '.join(CLAIM_IDS)}")
    if cid in PER_STAGE or cid in PER_GROUP:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        if items is None:
            raise UsageError(f"{where}: give a list (one value per {'stage' if cid in PER_STAGE else 'group'}) "
                             "or a mapping index -> value")
        out = []
        for i, v in items:
            if not isinstance(i, int) or i < 0:
                raise UsageError(f"{where}: index {i!r} must be a whole number >= 0")
            if cid in PER_GROUP:
                if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                    raise UsageError(f"{where}[{i}]: give the group's GPU indices as a list, e.g. [0, 1]")
                out.append(Claim(cid, list(v), f"{cid}[{i}]: {v}", i, 0.0))
            else:
                out.append(Claim(cid, _num(v, f"{where}[{i}]"), f"{cid}[{i}]: {v}", i, _quantum_of(v)))
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
    return [Claim(cid, v, f"{cid}: {value}", None, _quantum_of(value))]


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UsageError(f"{where}: expected a number, got {v!r}")
    return float(v)


# ---------------------------------------------------------------- entry

def load_claims(path: str | Path) -> ClaimsDoc:
    """A claims YAML (a mapping with ``claims``) or a markdown report; UsageError when unreadable
    or when no claim is recognised."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"report: {path} not found; give a claims YAML or a markdown report") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise UsageError(f"report: {path} is not a readable text file ({e.__class__.__name__})") from None
    data = None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        if p.suffix.lower() in (".yaml", ".yml"):
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise UsageError(f"report: {path}:{where} is not valid YAML; fix the syntax there") from None
    if isinstance(data, dict) and "claims" in data:
        doc = parse_yaml(data, str(p))
    elif p.suffix.lower() in (".yaml", ".yml"):
        raise UsageError(f"report: {path} has no 'claims' mapping; see docs/claims.md for the schema")
    else:
        doc = parse_markdown(text, str(p))
    if not doc.claims:
        raise UsageError(f"report: {path} holds no recognisable claim (lines like '**Memory per GPU**: 35GB' "
                         "or a claims YAML, docs/claims.md)")
    return doc
