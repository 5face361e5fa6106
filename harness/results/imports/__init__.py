"""Peer tools' results read back as our records: one module per result format, one entry per format
in :data:`FORMATS` (name, tool, ``detect(path)``, ``read(path) -> Imported``). ``harness
import-bench`` detects the format from the files and reads it through this table alone.

| format | tool | what is read |
|---|---|---|
| ``aiperf`` | NVIDIA AIPerf | ``profile_export.jsonl`` (+ ``..._aiperf.json``), or their folder |
| ``guidellm`` | guidellm | ``benchmarks.json`` (its first benchmark) |
| ``loadgen`` | MLPerf LoadGen | ``mlperf_log_detail.txt`` (+ trace, accuracy log) or the folder |
| ``vllm`` | ``vllm bench serve`` | its ``--save-result --save-detailed`` JSON |
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.results.imports import aiperf, guidellm, loadgen, vllm_bench
from harness.results.imports.base import Format, Imported

FORMATS: tuple[Format, ...] = (
    Format("aiperf", "NVIDIA AIPerf", aiperf.detect, aiperf.read),
    Format("guidellm", "guidellm", guidellm.detect, guidellm.read),
    Format("loadgen", "MLPerf LoadGen", loadgen.detect, loadgen.read),
    Format("vllm", "vllm bench serve", vllm_bench.detect, vllm_bench.read),
)


def detect(path: str | Path) -> Format:
    """The format of ``path`` (a file, or a tool's artifact folder), or a one-line error."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"import-bench: {p}: not found; give a result file or a tool's folder")
    for fmt in FORMATS:
        if fmt.detect(p):
            return fmt
    raise UsageError(
        f"import-bench: {p}: none of the formats it reads ("
        + ", ".join(f"{f.tool}" for f in FORMATS)
        + "); give AIPerf's profile_export.jsonl or its folder, guidellm's benchmarks.json, "
        "LoadGen's mlperf_log_detail.txt, or vllm bench serve's --save-result JSON"
    )


def read_any(path: str | Path) -> tuple[Format, Imported]:
    fmt = detect(path)
    return fmt, fmt.read(Path(path))
