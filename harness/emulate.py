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
  both against the local device's measured copy bandwidth and matmul peak (``measure_peaks``).

``project`` feeds the measured stage times (interpolated; a stage type that was not measured is
scaled from a measured one by the planner's floor ratio) plus the planner's communication time
into the planner's own workload bounds, so the projection and the analytic floors are computed
by one formula and differ only in where the compute time comes from.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from harness import planner
from harness.catalog import GPU_CATALOG, GpuSpec
from harness.comm import COMM_COLUMNS, Comm, CommRecorder
from harness.errors import UsageError
from harness.layout import Layout, RankPlace
from harness.model.build import build_stage
from harness.model.llama import BatchIndex, StageModel, rope_cos_sin
from harness.model.weights import SeededWeights
from harness.parallel.pp import StepMeta, pack_header
from harness.parallel.tp import greedy_sample

SCHEMA = "harness.emulate/1"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_WEIGHT_LIMIT = 4 * 2**30      # a CPU emulation beyond this is a mistake (the tiny spec is ~0.2 MB)
WARMUP = 2                        # eager iterations before timing (and before graph capture)


# ---------------------------------------------------------------- communication that is not issued

class _NoWait:
    def wait(self) -> None:
        return None


class RecordingComm(Comm):
    """The layout's groups at their real sizes; each op appends the row a real run would (same
    columns: op, group, group size, peer, dtype, elements, bytes) and moves nothing. As in
    ``Comm``, a group of one rank issues nothing; times stay None since nothing ran."""

    def _rec(self, op: str, group: str, n: int, peer: int, t: torch.Tensor) -> None:
        self.rec.end(None, op, group, n, peer, t)

    def all_reduce(self, t, group="tp"):
        if self.size(group) > 1:
            self._rec("all_reduce", group, self.size(group), -1, t)
        return t

    def all_gather(self, t, group="tp"):
        n = self.size(group)
        if n == 1:
            return [t]
        self._rec("all_gather", group, n, -1, t)
        return [t.clone() for _ in range(n)]   # as if every rank held the same values

    def broadcast(self, t, src, group):
        if self.size(group) > 1:
            self._rec("broadcast", group, self.size(group), src, t)
        return t

    def send(self, t, dst, group="pp"):
        self._rec("send", group, 2, dst, t)

    def recv(self, t, src, group="pp"):
        self._rec("recv", group, 2, src, t)
        return t

    def isend(self, t, dst, group="pp"):
        self.send(t, dst, group)
        return _NoWait()

    def irecv(self, t, src, group="pp"):
        self.recv(t, src, group)
        return _NoWait()

    def barrier(self, group="world"):
        return None


def rank_comm(layout: Layout, rank: int) -> RecordingComm:
    """Groups of ``rank`` as ``harness.dist.init`` builds them, with no process group behind them."""
    groups: dict[str, tuple[object, list[int]]] = {"world": (None, list(range(layout.world_size)))}
    for name, all_groups in (("tp", layout.tp_groups()), ("pp", layout.pp_groups()), ("dp", layout.dp_groups())):
        groups[name] = (None, next(g for g in all_groups if rank in g))
    return RecordingComm(groups, CommRecorder(rank, "off"))


def summarize_comm(rows: list) -> dict[str, dict[str, int]]:
    """Recorder rows -> {"op:group": {count, bytes}}."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        e = out.setdefault(f"{r[3]}:{r[4]}", {"count": 0, "bytes": 0})
        e["count"] += 1
        e["bytes"] += r[9]
    return out


def expected_rank_comm(spec, place: RankPlace, header_batch: int, rows: int, tokens: int) -> dict[str, dict[str, int]]:
    """The planner's ``expected_comm`` for this rank's stage and TP rank, in ``summarize_comm`` form."""
    out: dict[str, dict[str, int]] = {}
    exp = planner.expected_comm(spec.shape, spec.layout, spec.dtype_bytes, header_batch, rows, tokens)
    for (s, k, op, group), v in exp.items():
        if s == place.stage and (k is None or k == place.tp):
            e = out.setdefault(f"{op}:{group}", {"count": 0, "bytes": 0})
            e["count"] += v["count"]
            e["bytes"] += v["bytes"]
    return out


class StepComm:
    """The ops a rank issues around its forward in ``PipelineStage`` (same order, sizes, peers)."""

    def __init__(self, comm: Comm, layout: Layout, place: RankPlace, header_batch: int, device):
        self.comm, self.layout, self.place, self.device = comm, layout, place, device
        self.header_batch = header_batch
        p, s, k, d = layout.pp, place.stage, place.tp, place.dp
        self.first, self.last = s == 0, s == p - 1
        self.coordinator = layout.rank_of(d, 0, 0)
        self.prev = layout.rank_of(d, s - 1, k) if s > 0 else None
        self.next = layout.rank_of(d, s + 1, k) if s < p - 1 else None
        self.ret = layout.rank_of(d, p - 1, 0)

    def header(self, meta: StepMeta, width: int) -> torch.Tensor:
        return pack_header(meta, width, self.header_batch, self.device)

    def before(self, hdr: torch.Tensor, x: torch.Tensor) -> None:
        if self.first:
            self.comm.broadcast(hdr, self.coordinator, "tp")
            self.comm.broadcast(x, self.coordinator, "tp")
        else:
            self.comm.recv(hdr, self.prev, "pp")
            self.comm.recv(x, self.prev, "pp")

    def after(self, hdr: torch.Tensor, out: torch.Tensor, rows: int) -> None:
        if not self.last:
            self.comm.isend(hdr, self.next, "pp")
            self.comm.isend(out, self.next, "pp")
        elif not self.first and self.place.tp == 0:
            self.comm.isend(hdr, self.coordinator, "pp")
            self.comm.isend(out, self.coordinator, "pp")
        if self.first and self.place.tp == 0 and self.layout.pp > 1:   # collect(): the tokens come back
            self.comm.recv(hdr, self.ret, "pp")
            self.comm.recv(torch.empty(rows, dtype=torch.long, device=self.device), self.ret, "pp")


# ---------------------------------------------------------------- the device's own ceilings

@dataclass
class Peaks:
    """copy_gbps = 2·bytes / t (a device-to-device copy reads and writes each byte);
    matmul_tflops = 2·n³ / t; both the median of ``iters`` timings after warm-up."""

    device: str
    copy_gbps: float
    copy_bytes: int
    matmul_tflops: float
    matmul_n: int
    matmul_dtype: str
    iters: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Median wall time of ``fn`` over ``iters`` calls; the device is synced before every clock read."""
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_peaks(device: torch.device, dtype: torch.dtype, iters: int = 10) -> Peaks:
    """GPU: a 2 GiB copy and an 8192³ product; CPU: 32 MiB and 512³ (CPU figures, labelled so)."""
    cuda = device.type == "cuda"
    nbytes, n, reps = (2 * 2**30, 8192, 4) if cuda else (32 * 2**20, 512, 1)
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy_t = time_median(lambda: dst.copy_(src), device, max(iters, 10))
    del src, dst
    a = torch.randn(n, n, device=device).to(dtype)   # random data: zeros run faster than real work
    b = torch.randn(n, n, device=device).to(dtype)

    def products():
        for _ in range(reps):
            torch.matmul(a, b)

    for _ in range(3):
        products()
    mm_t = time_median(products, device, max(iters, 10)) / reps
    del a, b
    return Peaks(device_name(device), 2 * nbytes / copy_t / 1e9, nbytes, 2 * n**3 / mm_t / 1e12, n,
                 str(dtype).replace("torch.", ""), max(iters, 10))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def catalog_gpu_for(name: str) -> GpuSpec | None:
    """The catalogue entry of a device named ``name`` ("CPU", "NVIDIA H200", ...), or None."""
    low = name.lower()
    if low == "cpu":
        return GPU_CATALOG["cpu"]
    for key in ("h200", "h100", "a100"):
        if key in low:
            return next(g for k, g in GPU_CATALOG.items() if k.lower().startswith(key))
    return None


# ---------------------------------------------------------------- one rank

class StaticStep:
    """``StageModel.forward`` (+ greedy sampling on the last stage) over fixed inputs, with the
    ``BatchIndex`` built once outside: it syncs the host (``nonzero``, ``int(max)``), which a
    CUDA graph cannot capture. The same modules and kernels, so the output equals ``forward``;
    ``pre`` keeps the tensor before sampling (hidden, or the last stage's logits) for that check."""

    def __init__(self, model: StageModel, comm: Comm, x, slots, start_pos, n_tokens):
        self.model, self.comm, self.x = model, comm, x
        self.batch = BatchIndex(slots, start_pos, n_tokens, x.shape[1], model.max_seq_len)
        self.rows = torch.arange(x.shape[0], device=x.device)
        self.last_col = n_tokens - 1
        self.pre: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        m = self.model
        h = m.model.embed_tokens(self.x) if m.is_first else self.x
        cos, sin = rope_cos_sin(m.inv_freq, self.batch.positions, h.dtype)
        for layer in m.model.layers.values():
            h = layer(h, cos, sin, self.batch)
        self.pre = h if not m.is_last else m._logits(h[self.rows, self.last_col])
        if not m.is_last:
            return h
        self.comm.rec.phase = "sample"
        return greedy_sample(self.pre, self.comm)


@dataclass
class Point:
    phase: str                 # decode | prefill
    batch: int
    tokens: int                # new tokens per row
    context: int               # cached tokens each row reads
    step_s: float | None = None
    mode: str = ""             # cuda_graph | eager
    iters: int = 0
    warmup_s: float | None = None
    capture_s: float | None = None
    bytes: float = 0.0
    flops: float = 0.0
    gbps: float | None = None
    tflops: float | None = None
    copy_frac: float | None = None      # gbps / measured copy bandwidth
    peak_frac: float | None = None      # tflops / measured matmul peak
    comm: dict = field(default_factory=dict)          # recorded: {"op:group": {count, bytes}}
    comm_expected: dict = field(default_factory=dict)  # the planner's expected_comm for this rank
    check: str = ""            # StaticStep (the graph) against StageModel.forward
    note: str = ""


@dataclass
class RankResult:
    rank: int
    stage: int
    tp_rank: int
    kind: str                  # first | middle | last | only
    layers: list[int]
    params: int                # counted on the built modules
    params_expected: int       # planner.rank_params
    param_bytes: int
    build_s: float
    decode: list[Point] = field(default_factory=list)
    prefill: list[Point] = field(default_factory=list)
    comm_rows: list[dict] = field(default_factory=list)   # one decode step's recorder rows

    @classmethod
    def from_dict(cls, d: dict) -> "RankResult":
        """Back from the JSON of ``emulate`` (to project from ranks measured in separate runs)."""
        pts = {k: [Point(**p) for p in d.get(k, [])] for k in ("decode", "prefill")}
        return cls(**{**d, **pts})


@dataclass
class Sweep:
    batches: tuple[int, ...]
    contexts: tuple[int, ...]
    prefill: tuple[int, ...]
    iters: int
    graphs: bool = True
    budget_s: float | None = None      # stop starting new points after this long (per rank)


def default_sweep(device: torch.device) -> Sweep:
    if device.type == "cuda":
        return Sweep((1, 8, 32, 64, 128), (512, 2048), (512, 2048, 8192), 20)
    return Sweep((1, 4), (32, 96), (32, 96), 3)


def stage_kind(layout: Layout, stage: int) -> str:
    if layout.pp == 1:
        return "only"
    return "first" if stage == 0 else "last" if stage == layout.pp - 1 else "middle"


def default_ranks(layout: Layout) -> list[int]:
    """TP rank 0 of the first stage, of stage 1 (standing for every middle stage) and of the last."""
    stages = sorted({0, min(1, layout.pp - 1), layout.pp - 1})
    return [layout.rank_of(0, s, 0) for s in stages]


def check_sweep(spec, sweep: Sweep) -> None:
    ctx = spec.shape.max_context
    for name, vals, hi in (("--batches", sweep.batches, None), ("--contexts", sweep.contexts, ctx - 1),
                           ("--prefill", sweep.prefill, ctx)):
        for v in vals:
            if v < 1 or (hi is not None and v > hi):
                raise UsageError(f"{name}: {v} is out of range; use 1..{hi or 'any'} (model context {ctx})")
    if sweep.iters < 1:
        raise UsageError(f"--iters: must be >= 1, got {sweep.iters}")


def check_cpu_size(spec, ranks: list[int], device: torch.device) -> None:
    """A CPU emulation is for small specs: refuse one whose rank holds more than CPU_WEIGHT_LIMIT."""
    if device.type != "cpu":
        return
    for rank in ranks:
        need = planner.rank_params(spec.shape, spec.layout, spec.layout.place(rank).stage) * spec.dtype_bytes
        if need > CPU_WEIGHT_LIMIT:
            raise UsageError(f"run.device: rank {rank} of {spec.shape.name} holds {need / 1e9:.1f} GB of weights; "
                             "emulate it on a GPU (a CPU emulation is for the tiny spec)")


def _inputs(model: StageModel, rows: int, tokens: int, device, dtype, gen: torch.Generator):
    if model.is_first:
        return torch.randint(0, model.shape.vocab, (rows, tokens), device=device, generator=gen)
    return torch.randn(rows, tokens, model.shape.hidden, device=device, generator=gen).to(dtype)


def _fill_kv(model: StageModel, gen: torch.Generator) -> None:
    """Random cache contents: zeros would make attention's products cheaper than real ones."""
    for layer in model.model.layers.values():
        for c in (layer.self_attn.k_cache, layer.self_attn.v_cache):
            c.copy_(torch.randn(c.shape, device=c.device, generator=gen).to(c.dtype))


def _same(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> str:
    """"ok (exact)", "ok (rel ...)" within the dtype's rounding (‖a − b‖/‖b‖ <= 1e-2 for 16-bit
    types, 1e-5 for fp32: kernels may pick other algorithms inside a graph), else "mismatch"."""
    if torch.equal(a, b):
        return "ok (exact)"
    rel = ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    return f"ok (rel {rel:.1e})" if rel <= tol else f"mismatch (rel {rel:.1e})"


class RankEmulator:
    """One built rank and the measurements of its points."""

    def __init__(self, spec, rank: int, device: torch.device, peaks: Peaks):
        lay = spec.layout
        self.spec, self.device, self.peaks = spec, device, peaks
        self.place = lay.place(rank)
        self.dtype = DTYPES[spec.model.dtype]
        self.comm = rank_comm(lay, rank)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(spec.run.seed + 1)
        t0 = time.perf_counter()
        self.model = build_stage(spec.shape, lay, self.place, self.comm, dtype=self.dtype, device=device,
                                 weights=SeededWeights(spec.run.seed))
        _sync(device)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in self.model.parameters())
        self.result = RankResult(
            rank, self.place.stage, self.place.tp, stage_kind(lay, self.place.stage),
            list(lay.layers_of_stage(self.place.stage)), params,
            planner.rank_params(spec.shape, lay, self.place.stage),
            sum(p.numel() * p.element_size() for p in self.model.parameters()), build_s)

    def _rates(self, pt: Point) -> None:
        s = self.place.stage
        pt.bytes = planner.stage_bytes_read(self.spec.shape, self.spec.layout, s, self.spec.dtype_bytes,
                                            pt.batch, pt.tokens, pt.context)
        pt.flops = planner.stage_flops(self.spec.shape, self.spec.layout, s, pt.batch, pt.tokens, pt.context)
        if pt.step_s:
            pt.gbps, pt.tflops = pt.bytes / pt.step_s / 1e9, pt.flops / pt.step_s / 1e12
            pt.copy_frac, pt.peak_frac = pt.gbps / self.peaks.copy_gbps, pt.tflops / self.peaks.matmul_tflops

    def _recorded_step(self, pt: Point, step: int, x, slots, start, n, forward: Callable[[], torch.Tensor]):
        """One eager step with the recorder on: the ops (and bytes) a real rank issues for it."""
        rec = self.comm.rec
        hb = max(self.spec.run.max_batch, pt.batch)
        sc = StepComm(self.comm, self.spec.layout, self.place, hb, self.device)
        hdr = sc.header(StepMeta(step, slots, start, n, phase=pt.phase), pt.tokens)
        first_row = len(rec.rows)
        rec.level, rec.step, rec.phase = "counts", step, pt.phase
        try:
            sc.before(hdr, x)
            out = forward()
            sc.after(hdr, out, pt.batch)
        finally:
            rec.level = "off"
        rows = rec.rows[first_row:]
        pt.comm = summarize_comm(rows)
        pt.comm_expected = expected_rank_comm(self.spec, self.place, hb, pt.batch, pt.tokens)
        return out, rows

    def decode(self, batch: int, context: int, iters: int, graphs: bool) -> Point:
        pt = Point("decode", batch, 1, context)
        m, dev = self.model, self.device
        m.allocate_kv(batch, context + 1)
        _fill_kv(m, self.gen)
        x = _inputs(m, batch, 1, dev, self.dtype, self.gen)
        slots = torch.arange(batch, device=dev)
        start = torch.full((batch,), context, dtype=torch.long, device=dev)
        n = torch.ones(batch, dtype=torch.long, device=dev)
        step = StaticStep(m, self.comm, x, slots, start, n)
        _, rows = self._recorded_step(pt, len(self.result.decode), x, slots, start, n, step)
        ref = step.pre.clone()
        if not self.result.comm_rows:
            self.result.comm_rows = [dict(zip(COMM_COLUMNS, r)) for r in rows]
        eager = lambda: _eager_forward(m, self.comm, x, slots, start, n)  # noqa: E731
        with torch.no_grad():
            pt.check = _same(ref, m(x, slots, start, n), self.dtype)   # StaticStep == StageModel.forward
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            eager()
        _sync(dev)
        pt.warmup_s = time.perf_counter() - t0
        run, pt.mode = eager, "eager"
        if dev.type == "cuda" and graphs:
            try:
                run, pt.capture_s = _capture(step, dev)
                pt.mode = "cuda_graph"
            except RuntimeError as e:   # degrade: time the eager step, say why
                pt.note = f"graph capture failed, timed eagerly: {str(e).splitlines()[0][:160]}"
        pt.step_s, pt.iters = time_median(run, dev, iters), iters
        if pt.mode == "cuda_graph":
            run()
            pt.check = _same(step.pre, ref, self.dtype)   # the replayed graph computes what the eager step did
        del run, step
        self._rates(pt)
        return pt

    def prefill(self, tokens: int, iters: int) -> Point:
        pt = Point("prefill", 1, tokens, 0)
        m, dev = self.model, self.device
        m.allocate_kv(1, tokens)
        _fill_kv(m, self.gen)
        x = _inputs(m, 1, tokens, dev, self.dtype, self.gen)
        slots = torch.zeros(1, dtype=torch.long, device=dev)
        start = torch.zeros(1, dtype=torch.long, device=dev)
        n = torch.full((1,), tokens, dtype=torch.long, device=dev)
        run = lambda: _eager_forward(m, self.comm, x, slots, start, n)  # noqa: E731
        self._recorded_step(pt, len(self.result.prefill), x, slots, start, n, run)
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            run()
        _sync(dev)
        pt.warmup_s, pt.mode = time.perf_counter() - t0, "eager"
        pt.step_s, pt.iters = time_median(run, dev, iters), iters
        self._rates(pt)
        return pt

    def free(self) -> None:
        for layer in self.model.model.layers.values():
            layer.self_attn.k_cache = layer.self_attn.v_cache = None
        if self.device.type == "cuda":
            try:
                torch.cuda.empty_cache()
            except RuntimeError:   # after a CUDA error; the point already says what happened
                pass


@torch.no_grad()
def _eager_forward(model: StageModel, comm: Comm, x, slots, start, n) -> torch.Tensor:
    out = model(x, slots, start, n)
    if model.is_last:
        comm.rec.phase = "sample"
        out = greedy_sample(out, comm)
    return out


def _capture(step: StaticStep, device: torch.device):
    """Warm up on a side stream, capture one step, replay once; -> (replay, capture seconds)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    _sync(device)
    t0 = time.perf_counter()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    _sync(device)
    return (lambda: (graph.replay(), out)[1]), time.perf_counter() - t0


def emulate_rank(spec, rank: int, sweep: Sweep, device: torch.device, peaks: Peaks,
                 on_point: Callable[[RankResult, Point], None] | None = None) -> RankResult:
    """Build ``rank`` and measure every point of ``sweep``; a point that fails is kept with its note.
    ``on_point`` sees each point as it is done (progress, for a log that survives a kill)."""
    check_cpu_size(spec, [rank], device)
    em = RankEmulator(spec, rank, device, peaks)
    deadline = time.monotonic() + sweep.budget_s if sweep.budget_s else None
    # The goals' points first (decode at the smallest batch, prefill), so a spent budget skips the rest.
    b0 = min(sweep.batches)
    plan = ([("decode", b0, c) for c in sweep.contexts] + [("prefill", 1, t) for t in sweep.prefill]
            + [("decode", b, c) for c in sweep.contexts for b in sweep.batches if b != b0])
    broken = ""
    for phase, b, c in plan:
        blank = Point(phase, b, 1 if phase == "decode" else c, c if phase == "decode" else 0)
        if broken or (deadline is not None and time.monotonic() > deadline):
            blank.note = f"skipped: {broken or 'time budget spent'}"
            pt = blank
        else:
            try:
                pt = em.decode(b, c, sweep.iters, sweep.graphs) if phase == "decode" else em.prefill(c, sweep.iters)
            except torch.cuda.OutOfMemoryError:
                pt, blank.note = blank, "out of device memory"
            except Exception as e:   # keep the other points; a CUDA error poisons the context: stop there
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                pt, blank.note = blank, f"error: {type(e).__name__}: {msg}"
                if "CUDA" in msg or "cuda" in type(e).__name__.lower():
                    broken = "an earlier point hit a CUDA error"
            em.free()
        (em.result.decode if phase == "decode" else em.result.prefill).append(pt)
        if on_point is not None:
            on_point(em.result, pt)
    em.result.decode.sort(key=lambda p: (p.context, p.batch))
    del em.model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return em.result


# ---------------------------------------------------------------- projection

def _interp(xs: list[float], ys: list[float], x: float, single: str) -> float:
    """Piecewise linear through (xs, ys), extended linearly past the ends; one point: constant
    (``single="const"``) or proportional to x (``"prop"``). Never below a tenth of the smallest y."""
    pts = sorted(zip(xs, ys))
    if len(pts) == 1:
        y = pts[0][1] * (x / pts[0][0] if single == "prop" else 1.0)
    else:
        i = next((k for k in range(1, len(pts) - 1) if x <= pts[k][0]), len(pts) - 1)
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return max(y, 0.1 * min(ys))


def measured_compute(res: RankResult, rows: float, tokens: float, context: float) -> float | None:
    """Seconds of ``res``'s stage for rows x tokens after ``context``, from its measured points:
    decode (tokens == 1) bilinear in (batch, context); prefill (batch 1) linear in tokens, x rows."""
    if tokens <= 1:
        good = [p for p in res.decode if p.step_s]
        ctxs = sorted({p.context for p in good})
        if not ctxs:
            return None
        at_c = [_interp([p.batch for p in good if p.context == c], [p.step_s for p in good if p.context == c],
                        rows, "const") for c in ctxs]
        return _interp(ctxs, at_c, context, "const")
    good = [p for p in res.prefill if p.step_s]
    if not good:
        return None
    return rows * _interp([p.tokens for p in good], [p.step_s for p in good], tokens, "prop")


@dataclass(frozen=True)
class MeasuredTiming(planner.Timing):
    """The planner's ``Timing`` with compute taken from measured stages; communication stays the
    planner's link model. A stage with no measurement of its own uses the measured stage of its
    kind (else the nearest measured stage) times the planner's floor ratio between the two;
    ``gpu_ratio`` (when set) scales every point from the local device to the spec's GPU."""

    measured: dict = field(default_factory=dict)        # stage -> RankResult
    local_gpu: GpuSpec | None = None                    # set: scale by floor(spec gpu) / floor(local gpu)

    def source(self, s: int) -> int:
        kinds = {r.stage: r.kind for r in self.measured.values()}
        if s in self.measured:
            return s
        same = [k for k, kind in kinds.items() if kind == stage_kind(self.layout, s)]
        return min(same or list(kinds), key=lambda k: abs(k - s))

    def compute(self, s: int, rows: int, tokens: int, context: float) -> float:
        ref = self.source(s)
        t = measured_compute(self.measured[ref], rows, tokens, context)
        if t is None:
            return float("nan")
        if ref != s:
            t *= super().compute(s, rows, tokens, context) / super().compute(ref, rows, tokens, context)
        if self.local_gpu is not None:
            local = planner.Timing(self.shape, self.layout, self.local_gpu, self.dtype_bytes, self.max_batch,
                                   self.links)
            t *= super().compute(s, rows, tokens, context) / local.compute(s, rows, tokens, context)
        return t


def _bounds_dict(b: planner.Bounds, label: str, basis: str) -> dict:
    keys = ("tpot_floor_s", "tpot_at_rows_s", "ttft_floor_s", "e2e_floor_s", "rps_bound", "rps_slo",
            "decode_rows", "slo_rows", "decode_context", "micro_batches", "offered_rps")
    d = {k: getattr(b, k) for k in keys}
    d.update(label=label, basis=basis, decode_step_s=list(b.decode_step_s), problems=list(b.problems))
    return d


def project(spec, results: list[RankResult], device_label: str, local_gpu: GpuSpec | None) -> dict:
    """Projected TPOT/TTFT/max RPS of the whole deployment (label "projection") beside the
    planner's analytic floors, both from ``planner.workload_bounds`` on the spec's workload and SLOs.
    Scaled to the spec's GPU by the per-point floor ratio when the local device is another GPU."""
    pl = planner.plan(spec)
    base = planner.Timing(spec.shape, spec.layout, spec.gpu, spec.dtype_bytes, spec.run.max_batch,
                          planner.links(spec.layout, spec.gpu, spec.cluster.gpus_per_node, spec.parallel.gpu_map))
    scale = (local_gpu is not None and "cpu" not in (local_gpu.name, spec.gpu.name)
             and local_gpu.name != spec.gpu.name)
    tm = MeasuredTiming(*[getattr(base, f) for f in ("shape", "layout", "gpu", "dtype_bytes", "max_batch", "links")],
                        measured={r.stage: r for r in results}, local_gpu=local_gpu if scale else None)
    capacity = min(st.kv_token_capacity for st in pl.stages)
    wl = planner.workload_shape(spec.workload)
    proj = planner.workload_bounds(tm, wl, capacity, spec.micro_batches, spec.slo_targets)
    sources = {s: tm.source(s) for s in range(spec.layout.pp)}
    basis = (f"stage compute measured on {device_label}"
             + (f", scaled to {spec.gpu.name} by the planner's floor ratio per point" if scale else "")
             + "; communication from the planner's link model; queueing ignored")
    out = {"projection": _bounds_dict(proj, "projection", basis),
           "analytic": _bounds_dict(pl.bounds, "analytic floor", f"planner roofline on {spec.gpu.name}"),
           "stage_sources": {str(s): ("measured" if s == r else f"scaled from stage {r}") for s, r in sources.items()}}
    return out


# ---------------------------------------------------------------- whole command

def pick_ranks(layout: Layout, rank: int | None, stage: int | None) -> list[int]:
    if rank is not None:
        if not 0 <= rank < layout.world_size:
            raise UsageError(f"--rank: {rank} is outside 0..{layout.world_size - 1} (tp*pp*dp ranks)")
        return [rank]
    if stage is not None:
        if not 0 <= stage < layout.pp:
            raise UsageError(f"--stage: {stage} is outside 0..{layout.pp - 1} (parallel.pp stages)")
        return [layout.rank_of(0, stage, 0)]
    return default_ranks(layout)


def emulate(spec, ranks: list[int], sweep: Sweep, device: torch.device,
            on_point: Callable[[RankResult, Point], None] | None = None) -> dict:
    """Peaks, every rank's points and the projection, as one JSON-ready dict."""
    from harness.results import environment
    check_sweep(spec, sweep)
    check_cpu_size(spec, ranks, device)
    peaks = measure_peaks(device, DTYPES[spec.model.dtype])
    results = [emulate_rank(spec, r, sweep, device, peaks, on_point) for r in ranks]
    label = device_name(device)
    return {
        "schema": SCHEMA,
        "spec": {"name": spec.name, "source": spec.source, "model": spec.shape.name, "dtype": spec.model.dtype,
                 "gpu": spec.gpu.name, "tp": spec.layout.tp, "pp": spec.layout.pp, "dp": spec.layout.dp,
                 "layer_split": list(spec.layout.layer_split)},
        "device": {"type": device.type, "name": label,
                   "note": "" if device.type == "cuda" else "CPU numbers: not a GPU measurement"},
        "environment": environment(),
        "sweep": asdict(sweep),
        "peaks": asdict(peaks),
        "ranks": [asdict(r) for r in results],
        **project(spec, results, label, catalog_gpu_for(label)),
    }
