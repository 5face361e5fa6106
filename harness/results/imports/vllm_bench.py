"""``vllm bench serve --save-result --save-detailed`` as one entry of the format table: the reading
lives in ``harness.results.bench_import``; every number of the file has our definition (the file's
keys are our summary's), so each must be reproduced."""

from __future__ import annotations

from pathlib import Path

from harness.results.bench_import import (
    file_metrics,
    read_bench_file,
    records_from_bench,
    selected_stats,
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
# vllm bench serve --metadata keys that name the layout (harness.results.bench_import)
_LAYOUT = ("tp", "pp", "dp", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def detect(path: Path) -> bool:
    """Any other ``.json`` file: the last entry of the table, so that a JSON file none of the others
    recognised gets vLLM's reader and its exact error (not JSON, several results, not detailed)."""
    return path.is_file() and path.suffix == ".json"


def read(path: Path) -> Imported:
    data = read_bench_file(path)
    records, errors = records_from_bench(data)
    own = file_metrics(data)
    comparisons = [
        Comparison(k, k, None if v is None else float(v), True)
        for k, v in own.items()
        if k != "duration"
    ]
    pct_metrics, pct = selected_stats(data)
    return Imported(
        tool=TOOL,
        files=[str(path)],
        records=records,
        errors=errors,
        duration_s=float(data["duration"]),
        latency_origin="send",
        workload=workload_from_bench(data),
        comparisons=comparisons,
        header={
            **{k: data.get(k) for k in _HEADER},
            **{k: data[k] for k in _LAYOUT if k in data},
            "percentile_metrics": pct_metrics,
            "metric_percentiles": pct,
            "file_metrics": own,
        },
        name=str(data.get("label") or "vllm-bench"),
        goodput_in_file=data.get("request_goodput"),
    )
