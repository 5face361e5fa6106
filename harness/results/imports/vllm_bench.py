"""``vllm bench serve --save-result --save-detailed`` as one entry of the format table: the reading
lives in ``harness.results.bench_import``; every number of the file has our definition (the file's
keys are our summary's), so each must be reproduced. The families the harness adds to the files it
writes (``*_ttft_including_client_queue_ms`` and the like, ``bench_file.OURS``: from the scheduled
arrival, where the summary of an imported file counts from the send) are recomputed from the
records the harness's way and must reproduce the file's values too."""

from __future__ import annotations

from pathlib import Path

from harness.results.bench_file import OURS, family_values_s, metric_stats_ms
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


ARRIVAL_DEFINITION = "the harness's own key: from the scheduled arrival (client queue included)"


def _our_families(records, percentiles) -> dict[str, float]:
    """The harness's families of the file, recomputed from the completed records."""
    values = family_values_s([r for r in records if r.completed])
    out: dict[str, float] = {}
    for family in OURS:
        out.update(metric_stats_ms(family, values[family], percentiles))
    return out


def detect(path: Path) -> bool:
    """Any other ``.json`` file: the last entry of the table, so that a JSON file none of the others
    recognised gets vLLM's reader and its exact error (not JSON, several results, not detailed)."""
    return path.is_file() and path.suffix == ".json"


def read(path: Path) -> Imported:
    data = read_bench_file(path)
    records, errors = records_from_bench(data)
    own = file_metrics(data)
    pct_metrics, pct = selected_stats(data)
    ours = _our_families(records, pct)
    comparisons = [
        Comparison(k, k, None if v is None else float(v), True)
        if k not in ours
        else Comparison("", k, None if v is None else float(v), False, ARRIVAL_DEFINITION, ours[k])
        for k, v in own.items()
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
