"""The emulator's result records: one measured point, one rank's build and points (JSON-ready
with ``dataclasses.asdict``; ``RankResult.from_dict`` reads them back)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Point:
    phase: str  # decode | prefill
    batch: int
    tokens: int  # new tokens per row
    context: int  # cached tokens each row reads
    step_s: float | None = None
    mode: str = ""  # cuda_graph | eager
    iters: int = 0
    warmup_s: float | None = None
    capture_s: float | None = None
    bytes: float = 0.0
    flops: float = 0.0
    gbps: float | None = None
    tflops: float | None = None
    copy_frac: float | None = None  # gbps / measured copy bandwidth
    peak_frac: float | None = None  # tflops / measured matmul peak
    comm: dict = field(default_factory=dict)  # recorded: {"op:group": {count, bytes}}
    comm_expected: dict = field(default_factory=dict)  # the planner's expected_comm for this rank
    check: str = ""  # StaticStep (the graph) against StageModel.forward
    note: str = ""


@dataclass
class RankResult:
    rank: int
    stage: int
    tp_rank: int
    kind: str  # first | middle | last | only
    layers: list[int]
    params: int  # counted on the built modules
    params_expected: int  # planner.rank_params
    param_bytes: int
    build_s: float
    decode: list[Point] = field(default_factory=list)
    prefill: list[Point] = field(default_factory=list)
    comm_rows: list[dict] = field(default_factory=list)  # one decode step's recorder rows

    @classmethod
    def from_dict(cls, d: dict) -> "RankResult":
        """Back from the JSON of ``emulate`` (to project from ranks measured in separate runs)."""
        pts = {k: [Point(**p) for p in d.get(k, [])] for k in ("decode", "prefill")}
        return cls(**{**d, **pts})
