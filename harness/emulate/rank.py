"""One rank of a layout built and timed on the local device, and the whole command's report.

``RankEmulator`` builds exactly one rank's modules (its stage's layers at the TP shapes, plus the
embedding or lm_head shard) with seeded weights in the spec dtype, behind a ``RecordingComm``,
and times its points; ``emulate_rank`` runs a ``Sweep`` of them; ``emulate`` adds the device's
ceilings and the projection and returns the JSON-ready report. Formulas:
harness/emulate/__init__.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

import torch

from harness.emulate.comm import StepComm, expected_rank_comm, rank_comm, summarize_comm
from harness.emulate.projection import project
from harness.emulate.records import Point, RankResult
from harness.emulate.step import StaticStep, capture_or_eager, eager_forward, same_output
from harness.emulate.sweep import DTYPES, Sweep, check_cpu_size, check_sweep, stage_kind
from harness.emulate.timing import (
    WARMUP,
    Peaks,
    catalog_gpu_for,
    device_name,
    measure_peaks,
    raise_to_points,
    sync,
    time_median,
)
from harness.engines.reference.comm import COMM_COLUMNS
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.llama import StageModel
from harness.engines.reference.model.weights import SeededWeights
from harness.engines.reference.parallel.pp import StepMeta
from harness.plan import planner

SCHEMA = "harness.emulate/1"


def _inputs(model: StageModel, rows: int, tokens: int, device, dtype, gen: torch.Generator):
    """Packed inputs of rows x tokens, as a real step's: ids ``[N]`` or hidden ``[N, hidden]``."""
    if model.is_first:
        return torch.randint(0, model.shape.vocab, (rows * tokens,), device=device, generator=gen)
    return torch.randn(rows * tokens, model.shape.hidden, device=device, generator=gen).to(dtype)


def _fill_kv(model: StageModel, gen: torch.Generator) -> None:
    """Random cache contents: zeros would make attention's products cheaper than real ones."""
    for layer in model.model.layers.values():
        for c in (layer.self_attn.k_cache, layer.self_attn.v_cache):
            c.copy_(torch.randn(c.shape, device=c.device, generator=gen).to(c.dtype))


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
        self.model = build_stage(
            spec.shape,
            lay,
            self.place,
            self.comm,
            dtype=self.dtype,
            device=device,
            weights=SeededWeights(spec.run.seed),
        )
        sync(device)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in self.model.parameters())
        self.result = RankResult(
            rank,
            self.place.stage,
            self.place.tp,
            stage_kind(lay, self.place.stage),
            list(lay.layers_of_stage(self.place.stage)),
            params,
            planner.rank_params(spec.shape, lay, self.place.stage),
            sum(p.numel() * p.element_size() for p in self.model.parameters()),
            build_s,
        )

    def _rates(self, pt: Point) -> None:
        s = self.place.stage
        pt.bytes = planner.stage_bytes_read(
            self.spec.shape,
            self.spec.layout,
            s,
            self.spec.dtype_bytes,
            pt.batch,
            pt.tokens,
            pt.context,
        )
        pt.flops = planner.stage_flops(
            self.spec.shape, self.spec.layout, s, pt.batch, pt.tokens, pt.context
        )
        if pt.step_s:
            pt.gbps, pt.tflops = pt.bytes / pt.step_s / 1e9, pt.flops / pt.step_s / 1e12
            pt.copy_frac, pt.peak_frac = (
                pt.gbps / self.peaks.copy_gbps,
                pt.tflops / self.peaks.matmul_tflops,
            )
            # (provisional: raise_to_points sets them against the final ceilings once every point is
            # in)

    def _recorded_step(
        self, pt: Point, step: int, x, slots, start, n, forward: Callable[[], torch.Tensor]
    ):
        """One eager step with the recorder on: the ops (and bytes) a real rank issues for it."""
        rec = self.comm.rec
        hb = max(self.spec.run.max_batch, pt.batch)
        sc = StepComm(self.comm, self.spec.layout, self.place, hb, self.device)
        hdr = sc.header(StepMeta(step, slots, start, n, phase=pt.phase), pt.batch * pt.tokens)
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
        eager = lambda: eager_forward(m, self.comm, x, slots, start, n)  # noqa: E731
        with torch.no_grad():
            # StaticStep == StageModel.forward
            pt.check = same_output(ref, m(x, slots, start, n), self.dtype)
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            eager()
        sync(dev)
        pt.warmup_s = time.perf_counter() - t0
        run, pt.mode = eager, "eager"
        if dev.type == "cuda" and graphs:
            run, pt.mode, capture_s, pt.note = capture_or_eager(step, dev, eager)
            if capture_s is not None:
                pt.capture_s = capture_s
        pt.step_s, pt.iters = time_median(run, dev, iters), iters
        if pt.mode == "cuda_graph":
            run()
            # the replayed graph computes what the eager step did
            pt.check = same_output(step.pre, ref, self.dtype)
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
        run = lambda: eager_forward(m, self.comm, x, slots, start, n)  # noqa: E731
        self._recorded_step(pt, len(self.result.prefill), x, slots, start, n, run)
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            run()
        sync(dev)
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
            except RuntimeError:  # after a CUDA error; the point already says what happened
                pass


def emulate_rank(
    spec,
    rank: int,
    sweep: Sweep,
    device: torch.device,
    peaks: Peaks,
    on_point: Callable[[RankResult, Point], None] | None = None,
) -> RankResult:
    """Build ``rank`` and measure every point of ``sweep``; a point that fails is kept with its
    note. ``on_point`` sees each point as it is done (progress, for a log that survives a kill)."""
    check_cpu_size(spec, [rank], device)
    em = RankEmulator(spec, rank, device, peaks)
    deadline = time.monotonic() + sweep.budget_s if sweep.budget_s else None
    # The goals' points first (decode at the smallest batch, prefill), so a spent budget skips the
    # rest.
    b0 = min(sweep.batches)
    plan = (
        [("decode", b0, c) for c in sweep.contexts]
        + [("prefill", 1, t) for t in sweep.prefill]
        + [("decode", b, c) for c in sweep.contexts for b in sweep.batches if b != b0]
    )
    broken = ""
    for phase, b, c in plan:
        blank = Point(phase, b, 1 if phase == "decode" else c, c if phase == "decode" else 0)
        if broken or (deadline is not None and time.monotonic() > deadline):
            blank.note = f"skipped: {broken or 'time budget spent'}"
            pt = blank
        else:
            try:
                pt = (
                    em.decode(b, c, sweep.iters, sweep.graphs)
                    if phase == "decode"
                    else em.prefill(c, sweep.iters)
                )
            except torch.cuda.OutOfMemoryError:
                pt, blank.note = blank, "out of device memory"
            except (
                Exception
            ) as e:  # keep the other points; a CUDA error poisons the context: stop there
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


def emulate(
    spec,
    ranks: list[int],
    sweep: Sweep,
    device: torch.device,
    on_point: Callable[[RankResult, Point], None] | None = None,
) -> dict:
    """Peaks, every rank's points and the projection, as one JSON-ready dict."""
    from harness.results.environment import environment

    check_sweep(spec, sweep)
    check_cpu_size(spec, ranks, device)
    peaks = measure_peaks(device, DTYPES[spec.model.dtype])
    results = [emulate_rank(spec, r, sweep, device, peaks, on_point) for r in ranks]
    raise_to_points(peaks, [p for r in results for p in r.decode + r.prefill])
    label = device_name(device)
    return {
        "schema": SCHEMA,
        "spec": {
            "name": spec.name,
            "source": spec.source,
            "model": spec.shape.name,
            "dtype": spec.model.dtype,
            "gpu": spec.gpu.name,
            "tp": spec.layout.tp,
            "pp": spec.layout.pp,
            "dp": spec.layout.dp,
            "layer_split": list(spec.layout.layer_split),
        },
        "device": {
            "type": device.type,
            "name": label,
            "note": "" if device.type == "cuda" else "CPU numbers: not a GPU measurement",
        },
        "environment": environment(),
        "sweep": asdict(sweep),
        "peaks": asdict(peaks),
        "ranks": [asdict(r) for r in results],
        **project(spec, results, label, catalog_gpu_for(label)),
    }
