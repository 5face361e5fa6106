"""The strategy spec: one YAML file, validated once into a typed tree.

Sections: model, cluster, parallel, workload, slo, run, engine (see README "Spec format").
Every error names its dotted field path and the fix, as a ``UsageError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import REPO_ROOT
from harness.errors import UsageError, shown
from harness.spec.bench_flags import check_bench_fields
from harness.spec.bounds import check_limits
from harness.spec.catalog import GpuSpec, ModelShape, gpu_spec, model_preset
from harness.spec.engine import EngineSpec, validate_engine
from harness.spec.hf_config import model_from_hf_config
from harness.spec.layout import Layout, even_split
from harness.spec.slo import SloTarget, resolve_targets
from harness.spec.typed import build_dataclass
from harness.spec.yaml_text import apply_overrides, read_yaml_file


@dataclass
class ModelSpec:
    preset: str | None = None  # llama3-70b, llama3-8b, llama3.1-405b, tiny
    config: str | None = None  # path to a Hugging Face config.json (or its folder)
    checkpoint: str | None = None  # HF checkpoint folder for real weights; None: seeded weights
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


@dataclass
class ClusterSpec:
    gpu: str = "H100-SXM-80GB"
    nodes: int = 1
    gpus_per_node: int = 8
    overrides: dict = field(default_factory=dict)  # any GpuSpec field, e.g. hbm_gbps: 3000


@dataclass
class ParallelSpec:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    layer_split: list[int] | None = None  # decoder layers per stage
    gpu_map: list[int] | None = (
        None  # per node: local rank -> CUDA device index (default: identity)
    )


@dataclass
class LengthDist:
    dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    value: int | None = None
    min: int | None = None
    max: int | None = None
    mean: float | None = None
    std: float | None = None
    sigma: float | None = None


@dataclass
class WorkloadSpec:
    arrival: Literal["poisson", "gamma", "constant", "closed"] = "poisson"
    rate_rps: float | None = 1.0
    burstiness: float = 1.0
    concurrency: int | None = None
    num_requests: int | None = 100
    duration_s: float | None = None
    input_len: LengthDist = field(default_factory=lambda: LengthDist(value=128))
    output_len: LengthDist = field(default_factory=lambda: LengthDist(value=128))
    seed: int = 0
    trace: str | None = None  # JSONL trace to replay instead of generating one
    trace_block_size: int = 512  # tokens per hash_ids block of a Mooncake/AIPerf trace
    max_concurrency: int | None = (
        None  # cap on requests in flight with a rate (vLLM --max-concurrency)
    )


@dataclass
class SloSpec:
    preset: str | None = None
    targets: list[str] = field(default_factory=list)
    # ms per request, vLLM --goodput; default: the targets'
    goodput: dict = field(default_factory=dict)
    # of every interval and SLO verdict (harness.measure.slo_verdicts); each verdict errs with
    # probability at most 1 - confidence
    confidence: float = 0.95
    # run until decided (harness.measure.sequential): arrivals go on until every target is decided
    # at a look or a budget runs out; max_requests replaces workload.num_requests
    until_decided: bool = False
    max_requests: int | None = None  # the request budget; default: the workload's requests
    max_seconds: float | None = None  # the time budget of the measured phase; default: none


@dataclass
class RunSpec:
    max_batch: int = 32  # sequences per micro-batch
    micro_batches: int | None = None  # micro-batches in flight; default: pp
    kv_cache_fraction: float = 0.9  # of the memory left after weights and workspace
    max_seq_len: int | None = None  # KV slot length; default: the model's context
    warmup_requests: int = 2
    timeout_s: float = 600.0  # whole run
    comm_timeout_s: float = 60.0  # one collective / send / recv
    seed: int = 0  # seeded weights
    record_tokens: bool = False
    prefill_chunk: int | None = None  # cap on one row's prefill tokens per step
    max_num_batched_tokens: int | None = (
        None  # tokens per micro-batch; default: plan.memory.token_budget
    )
    instrument: Literal["off", "counts", "timing"] = "timing"
    profile_steps: int = 0  # >0: export a torch.profiler trace of that many steps
    # decode steps replayed from CUDA graphs (engines/reference/parallel/graphs.py); null: on with
    # CUDA; on the CPU it does nothing (true there is noted in the summary)
    cuda_graphs: bool | None = None
    # how the TP all-reduces of CPU ranks travel: shm (the TP ranks of one host through shared
    # memory, engines/reference/shm_allreduce.py; gloo where they cannot) or gloo; CUDA: NCCL
    cpu_all_reduce: Literal["shm", "gloo"] = "shm"
    nvml_interval_s: float = 0.1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # vLLM-keyed
    percentile_metrics: list[str] = field(default_factory=lambda: ["ttft", "tpot", "itl", "e2el"])
    # result file's statistics
    metric_percentiles: list[float] = field(default_factory=lambda: [99.0])


@dataclass
class Spec:
    name: str = "run"
    model: ModelSpec = field(default_factory=ModelSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    slo: SloSpec = field(default_factory=SloSpec)
    run: RunSpec = field(default_factory=RunSpec)
    engine: EngineSpec = field(default_factory=EngineSpec)
    # Resolved once by validate(); not read from YAML.
    shape: ModelShape = field(default=None, init=False, repr=False)  # type: ignore[assignment]
    gpu: GpuSpec = field(default=None, init=False, repr=False)  # type: ignore[assignment]
    layout: Layout = field(default=None, init=False, repr=False)  # type: ignore[assignment]
    slo_targets: list[SloTarget] = field(default_factory=list, init=False, repr=False)
    source: str | None = field(default=None, init=False, repr=False)

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def micro_batches(self) -> int:
        return self.run.micro_batches or self.parallel.pp

    @property
    def dtype_bytes(self) -> int:
        return {"bf16": 2, "fp16": 2, "fp32": 4}[self.model.dtype]

    def to_dict(self) -> dict:
        """The spec as written (with defaults filled in), for results and round trips."""
        return {
            f.name: dataclasses.asdict(getattr(self, f.name))
            if dataclasses.is_dataclass(getattr(self, f.name))
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.init
        }


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """The spec YAML at ``path`` with ``--set`` overrides, typed and validated
    (``harness.spec.yaml_text`` reads the YAML)."""
    p = Path(path)
    raw = read_yaml_file(p)
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise UsageError(
            f"config: {path} must hold a mapping with model, cluster, parallel, workload, slo, run"
        )
    spec = spec_from_dict(apply_overrides(raw, overrides or []), base_dir=p.parent)
    spec.source = str(p)
    return spec


def spec_from_dict(raw: dict, base_dir: Path | None = None) -> Spec:
    if not isinstance(raw, dict):
        raise UsageError(
            "config: the top level must be a mapping with model, cluster, parallel, workload, slo, "
            "run"
        )
    spec = build_dataclass(Spec, raw, "")
    validate(spec, base_dir)
    return spec


# ---------------------------------------------------------------- validation


def _resolve_path(p: str, base_dir: Path | None) -> str:
    q = Path(p).expanduser()
    if not q.is_absolute() and base_dir is not None and not q.exists() and (base_dir / q).exists():
        q = base_dir / q
    return str(q)


def validate(spec: Spec, base_dir: Path | None = None) -> None:
    m, c, par, w, r = spec.model, spec.cluster, spec.parallel, spec.workload, spec.run
    check_limits(spec)  # every number finite and in its range (harness.spec.bounds)
    # model
    if (m.preset is None) == (m.config is None):
        if m.checkpoint and m.preset is None and m.config is None:
            m.config = m.checkpoint
        else:
            raise UsageError(
                "model: give exactly one of model.preset (e.g. llama3-70b) or model.config (a "
                "config.json path)"
            )
    if m.checkpoint:
        m.checkpoint = _resolve_path(m.checkpoint, base_dir)
    if m.preset is not None:
        spec.shape = model_preset(m.preset)
    else:
        m.config = _resolve_path(m.config, base_dir)
        spec.shape = model_from_hf_config(
            m.config, "model.checkpoint" if m.config == m.checkpoint else "model.config"
        )
    shape = spec.shape
    # cluster
    spec.gpu = gpu_spec(c.gpu, c.overrides)
    # parallel
    if par.ep != 1:
        raise UsageError(
            f"parallel.ep: {par.ep} given but Llama is a dense model with no experts; set ep: 1"
        )
    gpus = c.nodes * c.gpus_per_node
    world = par.tp * par.pp * par.dp
    if world != gpus:
        raise UsageError(
            f"parallel: tp*pp*dp = {par.tp}*{par.pp}*{par.dp} = {world} but the cluster has "
            f"{gpus} GPUs (cluster.nodes*cluster.gpus_per_node); make them equal"
        )
    for what, n in (
        ("num_heads", shape.num_heads),
        ("num_kv_heads", shape.num_kv_heads),
        ("intermediate", shape.intermediate),
    ):  # a vocabulary is padded instead
        if n % par.tp:
            ok = [d for d in range(1, min(n, 64) + 1) if n % d == 0]
            raise UsageError(
                f"parallel.tp: {par.tp} does not divide the model's {what}={n} "
                f"(KV heads are split, not replicated); use tp in {ok}"
            )
    if shape.num_layers < 1:
        raise UsageError(
            f"model: {shape.name} has {shape.num_layers} decoder layers; a model needs at least one"
        )
    if shape.num_layers < par.pp:
        raise UsageError(
            f"parallel.pp: {par.pp} stages but the model has only {shape.num_layers} layers; "
            f"use pp <= {shape.num_layers}"
        )
    if par.layer_split is not None:
        split = par.layer_split
        if len(split) != par.pp:
            raise UsageError(
                f"parallel.layer_split: {len(split)} entries for pp={par.pp}; give one per stage"
            )
        if sum(split) != shape.num_layers:
            raise UsageError(
                f"parallel.layer_split: sums to {sum(split)} but the model has {shape.num_layers} "
                f"layers; make it sum to {shape.num_layers}"
            )
        layer_split = tuple(split)
    else:
        layer_split = even_split(shape.num_layers, par.pp)
    if par.gpu_map is not None and sorted(par.gpu_map) != list(range(c.gpus_per_node)):
        raise UsageError(
            f"parallel.gpu_map: one device per local rank, the same on every node: a permutation "
            f"of "
            f"0..{c.gpus_per_node - 1} (cluster.gpus_per_node), got {shown(par.gpu_map)}"
        )
    spec.layout = Layout(par.tp, par.pp, par.dp, layer_split)
    # workload
    _validate_workload(w, shape, base_dir)
    # slo
    spec.slo_targets = resolve_targets(spec.slo.preset, spec.slo.targets)
    _validate_until_decided(spec)
    # vLLM bench flags' fields
    check_bench_fields(w, spec.slo, r, par.dp if spec.engine.kind == "reference" else 1)
    # run
    if r.max_seq_len is not None and not 1 <= r.max_seq_len <= shape.max_context:
        raise UsageError(
            f"run.max_seq_len: must be in 1..{shape.max_context} (the model's context), got "
            f"{r.max_seq_len}"
        )
    if r.max_num_batched_tokens is not None and r.max_num_batched_tokens < r.max_batch:
        raise UsageError(
            f"run.max_num_batched_tokens: {r.max_num_batched_tokens} < run.max_batch "
            f"{r.max_batch}; every "
            f"decode row must fit: use >= {r.max_batch}"
        )
    if (
        not spec.name
        or len(spec.name) > 100
        or not spec.name.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise UsageError(
            f"name: {shown(spec.name)} must be at most 100 letters, digits, '-', '_' or '.' (it "
            f"names the run folder)"
        )
    validate_engine(spec, REPO_ROOT, base_dir)


def _validate_until_decided(spec: Spec) -> None:
    s, w = spec.slo, spec.workload
    if not s.until_decided:
        for name in ("max_requests", "max_seconds"):
            if getattr(s, name) is not None:
                raise UsageError(
                    f"slo.{name}: a budget of slo.until_decided; set slo.until_decided: true "
                    f"(--until-decided) or drop it"
                )
        return
    if not spec.slo_targets:
        raise UsageError("slo.until_decided: needs SLO targets to decide; give slo.targets")
    if spec.engine.kind == "reference" and spec.parallel.dp > 1:
        raise UsageError(
            f"slo.until_decided: the reference engine's DP replicas judge apart (dp="
            f"{spec.parallel.dp}); use dp: 1 or a fixed num_requests"
        )
    if s.max_requests is not None:
        w.num_requests, w.duration_s = s.max_requests, None


def _max_len(d: LengthDist) -> int:
    """The largest length a distribution can produce (before clipping to the context)."""
    if d.dist == "fixed":
        return d.value or 0
    if d.dist == "uniform":
        return d.max or 0
    return d.max or 0  # normal/lognormal are clipped to max when given, else to the context


def _validate_length(d: LengthDist, where: str) -> None:
    need = {
        "fixed": ("value",),
        "uniform": ("min", "max"),
        "normal": ("mean", "std"),
        "lognormal": ("mean", "sigma"),
    }[d.dist]
    for k in need:
        if getattr(d, k) is None:
            raise UsageError(
                f"{where}.{k}: required for dist {d.dist}; e.g. {where}: {{dist: {d.dist}, {k}: "
                f"128}}"
            )
    if d.dist == "uniform" and d.min > d.max:
        raise UsageError(f"{where}: min {d.min} > max {d.max}; swap them")


def _validate_workload(w: WorkloadSpec, shape: ModelShape, base_dir: Path | None) -> None:
    if w.trace is not None:
        w.trace = _resolve_path(w.trace, base_dir)
        if not Path(w.trace).is_file():
            raise UsageError(f"workload.trace: {w.trace} not found; give a JSONL trace file")
    if w.arrival == "closed":
        if w.concurrency is None or w.concurrency < 1:
            raise UsageError(
                f"workload.concurrency: closed-loop arrival needs concurrency >= 1, got "
                f"{w.concurrency}"
            )
        if w.num_requests is None and w.trace is None:
            raise UsageError(
                "workload.num_requests: closed-loop arrival needs num_requests (duration_s alone "
                "cannot size it)"
            )
    elif w.trace is None and (w.rate_rps is None or w.rate_rps <= 0):
        raise UsageError(
            f"workload.rate_rps: must be > 0 for {w.arrival} arrivals, got {w.rate_rps}"
        )
    if w.num_requests is None and w.duration_s is None and w.trace is None:
        raise UsageError("workload.num_requests: give num_requests or duration_s")
    _validate_length(w.input_len, "workload.input_len")
    _validate_length(w.output_len, "workload.output_len")
    total = _max_len(w.input_len) + _max_len(w.output_len)
    if total > shape.max_context:
        raise UsageError(
            f"workload: input_len + output_len can reach {total} tokens, beyond the model's "
            f"context of {shape.max_context}; lower the lengths"
        )
