"""Benchmark result files that ``harness import-bench`` turns into run directories: one registry
entry per format (the tool that wrote it), each a reader of that tool's file into one
``ImportedResult``. The verb knows no format; a new tool is one reader plus one entry here.

A format's ``sniff(path)`` says cheaply whether a file is one of its own (the first that claims a
file reads it; ``--format NAME`` skips the sniffing); ``read(path)`` checks the file (one line,
exit 2, on anything wrong) and returns the records and what the file says about the run. The first
entry reads a file that no format claims, and its errors say what is wrong with it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import UsageError
from harness.measure.metrics import RequestRecord


@dataclass
class ImportedResult:
    """A tool's result file as the harness's records. ``duration_s``: the tool's own benchmark
    duration (the denominator of its rates); ``workload``: the spec's workload section the file
    describes; ``model_id``: the model as the file names it (a folder with config.json when the
    model can be resolved here); ``layout``: tp/pp/dp when the file records them;
    ``file_metrics``: the file's own numbers under the summary's names (the recomputed summary is
    checked against them); ``engine``: what the file says about what ran (``summary.engine``)."""

    tool: str
    records: list[RequestRecord]
    errors: dict[int, str]
    duration_s: float
    workload: dict[str, Any]
    model_id: str | None = None
    layout: dict[str, int] | None = None
    name: str | None = None
    started_utc: str | None = None
    latency_origin: str = "send"
    file_metrics: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ResultFormat:
    name: str
    tool: str  # the tool that writes it, as the report names it
    sniff: Callable[[Path], bool]
    read: Callable[[Path], ImportedResult]


def _at(module: str, name: str) -> Callable:
    """``module.name``, imported at the first call."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


FORMATS: dict[str, ResultFormat] = {
    "vllm": ResultFormat(
        name="vllm",
        tool="vllm bench serve",
        sniff=_at("harness.results.bench_import", "is_vllm_result"),
        read=_at("harness.results.bench_import", "read_vllm_result"),
    )
}


def result_format(path: Path, name: str | None = None) -> ResultFormat:
    """The format named, else the first that claims ``path``, else the first entry (whose reader
    then says what is wrong with the file)."""
    if name is not None:
        if name not in FORMATS:
            raise UsageError(
                f"--format: {name!r} is not a result format; use one of {', '.join(FORMATS)}"
            )
        return FORMATS[name]
    for fmt in FORMATS.values():
        if fmt.sniff(path):
            return fmt
    return next(iter(FORMATS.values()))


def unreproduced(
    file_metrics: dict[str, Any], metrics: dict[str, Any], rel: float = 1e-9
) -> list[str]:
    """The file's numbers our summary does not reproduce (beyond float rounding), as 'key: file vs
    ours'."""
    out = []
    for key, want in file_metrics.items():
        if key not in metrics:
            continue
        got = metrics[key]
        if want is None or got is None:
            if want != got:
                out.append(f"{key}: {want} vs {got}")
        elif not math.isclose(float(want), float(got), rel_tol=rel, abs_tol=1e-9):
            out.append(f"{key}: {want} vs {got}")
    return out
