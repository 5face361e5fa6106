"""``vllm bench serve --save-result --save-detailed`` as one entry of the format table: the reading
lives in ``harness.results.bench_import``; every number of the file has our definition (the file's
keys are our summary's), so each must be reproduced."""

from __future__ import annotations

import json
from pathlib import Path

from harness.results.bench_import import (
    file_metrics,
    read_bench_file,
    records_from_bench,
    workload_from_bench,
)
from harness.results.imports.base import Comparison, Imported

TOOL = "vllm bench serve"
_HEADER = (
    "backend",
    "endpoint_type",
    "model_id",
    "tokenizer_id",
    "label",
    "date",
    "request_rate",
    "burstiness",
    "max_concurrency",
    "num_prompts",
)


def detect(path: Path) -> bool:
    if not path.is_file() or path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "duration" in data and "request_throughput" in data


def read(path: Path) -> Imported:
    data = read_bench_file(path)
    records, errors = records_from_bench(data)
    comparisons = [
        Comparison(k, k, None if v is None else float(v), True)
        for k, v in file_metrics(data).items()
        if k != "duration"
    ]
    return Imported(
        tool=TOOL,
        files=[str(path)],
        records=records,
        errors=errors,
        duration_s=float(data["duration"]),
        latency_origin="send",
        workload=workload_from_bench(data),
        comparisons=comparisons,
        header={k: data.get(k) for k in _HEADER},
        name=str(data.get("label") or "vllm-bench"),
    )
