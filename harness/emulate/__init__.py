"""One rank of a layout on the local device, and the projection of the whole deployment from it.

``emulate_rank`` builds exactly one rank's modules (its stage's layers at the TP shapes, plus the
embedding or lm_head shard) with seeded weights in the spec dtype, behind a ``RecordingComm``
whose groups have the layout's sizes: every collective and send/recv is recorded with the bytes
it would move, none is executed. It then times:

- decode at each batch B x context c: KV cache for B slots of c + 1 positions, every row at
  position c, so attention reads c cached tokens plus the new one. On CUDA the step is captured
  once in a CUDA graph (``StaticStep``) and replayed; warm-up and capture are timed apart.
- prefill of T tokens, batch 1, through ``StageModel.forward`` (the run's own eager path).

Every time is the median of N iterations with a device sync before each timer read. Per point:
  achieved GB/s = bytes / step time, bytes = ``planner.stage_bytes_read`` (the rank's weights,
      the embedding only for the rows looked up, + the KV cache of c + T positions per row);
  TFLOP/s = flops / step time, flops = ``planner.stage_flops`` (2·matmul params·tokens + the
      lm_head on each row's last token + attention 4·L·q_dim/t per (query, key) pair);
  both against the local device's measured copy bandwidth and matmul peak (``measure_peaks``:
  the fastest of N; a ceiling a point beat is raised to that point, ``raise_to_points``, so no
  point shows more than 100 %).

``project`` feeds the measured stage times (interpolated; a stage type that was not measured is
scaled from a measured one by the planner's floor ratio) plus the planner's communication time
into the planner's own workload bounds, so the projection and the analytic floors are computed
by one formula and differ only in where the compute time comes from; an analytic floor above the
projection (or an upper bound below it) is reported as a planner error (``planner_errors``).

Modules, in the order they depend on each other:
  comm.py        RecordingComm (groups at real sizes, nothing issued), StepComm, planner comparison
  timing.py      Peaks, measure_peaks, raise_to_points, time_median/time_best, the device's
  catalogue entry records.py     Point, RankResult sweep.py       Sweep, the ranks to emulate, input
  checks step.py        StaticStep (graph-capturable decode step), eager step, graph capture, output
  check projection.py  measured_compute, MeasuredTiming, project rank.py        RankEmulator,
  emulate_rank, emulate (the whole command's report)

Place: beside the flow; a verb of its own built on the reference engine's model code.
May import: ``harness.spec``, ``harness.plan``, ``harness.measure``, ``harness.results``,
``harness.engines``, ``harness.errors``."""

from harness.emulate.comm import (
    RecordingComm,
    StepComm,
    expected_rank_comm,
    rank_comm,
    summarize_comm,
)
from harness.emulate.projection import MeasuredTiming, measured_compute, planner_errors, project
from harness.emulate.rank import SCHEMA, RankEmulator, emulate, emulate_rank
from harness.emulate.records import Point, RankResult
from harness.emulate.step import StaticStep, capture_graph, eager_forward, same_output
from harness.emulate.sweep import (
    CPU_WEIGHT_LIMIT,
    DTYPES,
    Sweep,
    check_cpu_size,
    check_sweep,
    default_ranks,
    default_sweep,
    pick_ranks,
    stage_kind,
)
from harness.emulate.timing import (
    WARMUP,
    Peaks,
    catalog_gpu_for,
    device_name,
    measure_peaks,
    raise_to_points,
    sync,
    time_best,
    time_median,
)

__all__ = [
    "CPU_WEIGHT_LIMIT",
    "DTYPES",
    "SCHEMA",
    "WARMUP",
    "MeasuredTiming",
    "Peaks",
    "Point",
    "RankEmulator",
    "RankResult",
    "RecordingComm",
    "StaticStep",
    "StepComm",
    "Sweep",
    "capture_graph",
    "catalog_gpu_for",
    "check_cpu_size",
    "check_sweep",
    "default_ranks",
    "default_sweep",
    "device_name",
    "eager_forward",
    "emulate",
    "emulate_rank",
    "expected_rank_comm",
    "measure_peaks",
    "measured_compute",
    "pick_ranks",
    "project",
    "rank_comm",
    "same_output",
    "stage_kind",
    "summarize_comm",
    "sync",
    "time_median",
    "time_best",
    "raise_to_points",
    "planner_errors",
]
