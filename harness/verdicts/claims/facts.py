"""Whole-text facts of a strategy report: model, dtype, GPU type and count, nodes and the strategy,
found anywhere in the text ("Llama3-70B-Instruct", "H100-8GPU", "8x H100 (80GB each)",
"2 nodes x 8 H200", "TP2-PP4-DP1", "2TP x 4PP")."""

from __future__ import annotations

import re

from harness.verdicts.claims.claim import ClaimsDoc

GPU_NAMES = {"h100": "H100-SXM-80GB", "h200": "H200-SXM-141GB", "a100": "A100-SXM-80GB"}

_MODEL = re.compile(
    r"\b(?:meta[-\s]?)?llama[-\s]?(\d(?:\.\d)?)[-\s]?(\d+)\s*b(?:[-\s]?(instruct|chat))?\b", re.I
)
STRATEGY = re.compile(
    r"\bTP\s*(\d+)\s*[-_x× ]?\s*PP\s*(\d+)(?:\s*[-_x× ]?\s*DP\s*(\d+))?"
    r"(?:\s*[-_x× ]?\s*EP\s*(\d+))?",
    re.I,
)
_STRATEGY_SPELLED = re.compile(
    r"(\d+)\s*TP\s*[x×*]\s*(\d+)\s*PP(?:\s*[x×*]\s*(\d+)\s*DP)?"
    r"(?:\s*[x×*]\s*(\d+)\s*EP)?",
    re.I,
)
_GPU_COUNT = [
    re.compile(r"\b(H100|H200|A100)[-\s]?(\d+)\s*GPUs?\b", re.I),
    re.compile(r"\b(\d+)\s*[x×]\s*(?:NVIDIA\s+)?(H100|H200|A100)\b", re.I),
]
_NODES = re.compile(r"\b(\d+)\s*nodes?\b(?:\s*[x×]\s*(\d+))?", re.I)
_DTYPE = re.compile(r"\b(bf16|fp16|fp32|bfloat16|float16|float32)\b", re.I)


def read_facts(doc: ClaimsDoc, text: str) -> None:
    """Set doc's model, strategy, GPU (and count), nodes and dtype from the first match of each in
    text."""
    m = _MODEL.search(text)
    if m:
        doc.model = f"llama{m.group(1)}-{m.group(2)}b" + (
            f"-{m.group(3).lower()}" if m.group(3) else ""
        )
    m = STRATEGY.search(text) or _STRATEGY_SPELLED.search(text)
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
