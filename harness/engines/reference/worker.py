"""One rank of the reference engine: build this rank's stage and TP shard, serve, and pack what it
recorded (``RankPayload``) for rank 0.

The first stage's TP rank 0 of each DP replica coordinates (schedules and times requests); every
other rank follows the pipeline. ``harness.engines.reference.engine`` gathers the payloads.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

import torch

from harness.engines.reference import dist as hdist
from harness.engines.reference.arrivals import measured_scheduler
from harness.engines.reference.loop import ServeLoop
from harness.engines.reference.model.accounting import have_accelerate, meta_rank_bytes
from harness.engines.reference.model.build import build_stage
from harness.engines.reference.model.weights import CheckpointWeights, SeededWeights
from harness.engines.reference.parallel.graphs import DecodeGraphs, graphs_note
from harness.engines.reference.parallel.pp import PipelineStage
from harness.engines.reference.scheduler import for_warmup
from harness.engines.reference.shm_allreduce import attach as attach_all_reduce
from harness.engines.reference.summary import RankPayload
from harness.measure.metrics import RequestRecord, progress
from harness.measure.nvml import NvmlSampler, torch_memory_stats
from harness.measure.nvml_summary import reset_peak_memory
from harness.plan.planner import plan as make_plan
from harness.plan.planner import seq_len, token_budget
from harness.results.summary import sequential_rule

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def run_rank(ctx, spec, trace, guard, state: dict, writer) -> RankPayload:
    """Serve ``trace`` on this rank until done or ``guard`` says stop; ``state`` shares the live
    request records with the stop callback."""
    place = ctx.place
    dtype = DTYPES[spec.model.dtype]
    weights = (
        CheckpointWeights(spec.model.checkpoint)
        if spec.model.checkpoint
        else SeededWeights(spec.run.seed)
    )
    # see build_stage: the profiler and the heap
    model = build_stage(
        spec.shape,
        spec.layout,
        place,
        ctx.comm,
        dtype=dtype,
        device=ctx.device,
        weights=weights,
        column_major=spec.run.profile_steps == 0,
    )
    # counted before serving: after a torch.profiler window the CPU heap is not to be trusted
    # (engine.close)
    counted = (  # None: accelerate not installed here, the summary says the count was skipped
        meta_rank_bytes(spec.shape, spec.layout, ctx.rank, spec.model.dtype)
        if have_accelerate()
        else None
    )
    plan = make_plan(spec)
    num_slots = plan.kv_slots()
    # the planner's slot length, so the allocation is the plan's (pages where it counted pages)
    kv_bytes = model.allocate_kv(num_slots, seq_len(spec), plan.run["slot_tokens"])
    # the memory table's peak: serving (weights, KV, activations), not the weight-building spike
    reset_peak_memory(ctx.device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if hdist.fail_rank_request() == ctx.rank:
        raise RuntimeError("HARNESS_FAIL_RANK: failing on purpose (test-only)")

    groups = spec.micro_batches
    # The most tokens a micro-batch carries: the token budget, or max_batch whole prompts (chunks)
    # if fewer.
    widest = max((r.input_len for r in trace.requests), default=1)
    max_tokens = min(
        token_budget(spec), spec.run.max_batch * min(spec.run.prefill_chunk or widest, widest)
    )
    stage = PipelineStage(ctx, model, spec.run.max_batch, max_tokens)
    profiled = spec.run.profile_steps > 0
    all_reduce, all_reduce_note = attach_all_reduce(
        ctx.comm,
        ctx.backend,
        spec.run.cpu_all_reduce,
        max_tokens * spec.shape.hidden * spec.dtype_bytes,
        spec.run.comm_timeout_s,
        profiled=profiled,
    )
    cuda = ctx.device.type == "cuda"
    if cuda and spec.run.cuda_graphs is not False:
        stage.graphs = DecodeGraphs(stage, spec.run.max_batch, num_slots)
    profiler = ProfilerWindow(spec.run.profile_steps, ctx, writer_dir=state.get("run_dir"))
    stage.on_step = profiler.step if profiler.enabled else None
    sampler = telemetry_sampler(ctx.device, ctx.env.local_rank, spec.run.nvml_interval_s)
    if sampler is not None:
        sampler.start()
    payload = RankPayload(
        rank=ctx.rank,
        dp=place.dp,
        stage=place.stage,
        tp=place.tp,
        coordinator=place.stage == 0 and place.tp == 0,
        hostname=os.uname().nodename,
        param_bytes=param_bytes,
        kv_bytes=kv_bytes,
        num_slots=num_slots,
        accelerate_weight_bytes=counted,
        graphs_note=graphs_note(spec.run.cuda_graphs, cuda),
        all_reduce=all_reduce,
        all_reduce_note=all_reduce_note,
    )
    # Every long-lived object of the rank exists now (modules, weights, KV cache, groups): out of
    # the collector's sight. A full collection scans them all (~280k objects, 150-165 ms measured
    # on this 2-core host), and one inside the serving loop stalled the whole pipeline: a TP peer
    # woke ~200 ms late, 6-10 times per 48-request run, the p99 inter-token gap (the OpenAI
    # driver freezes its process for the same reason; docs/performance.md). Not with the profiler:
    # its window and a frozen heap together crashed a rank with SIGSEGV after the window in 2 of 2
    # runs (torch 2.13, CPU; tests/test_run.py::test_two_dp_replicas_split_the_requests), and a
    # profiled run is not one to time anyway.
    if not profiled:
        gc.collect()
        gc.freeze()
    clock = time.monotonic
    if payload.coordinator:
        ticker = _Progress(ctx.rank == 0, state, writer)
        if ticker.enabled and writer is not None:
            warm_table_writer()
        rule = sequential_rule(spec, len(trace.requests))  # slo.until_decided (dp is 1)
        loop = ServeLoop(
            stage,
            groups,
            ctx.device,
            clock,
            place.dp,
            should_stop=guard.is_set,
            on_tick=ticker,
            stop_arrivals=None if rule is None else rule.should_stop,
        )
        warm = for_warmup(spec, trace, place.dp, num_slots)
        w0 = clock()
        if spec.run.warmup_requests > 0:
            loop.run(warm, w0, warmup=True)
        payload.warmup_s = clock() - w0
        payload.warmup_steps = warm.step
        sched = measured_scheduler(
            spec, trace, place.dp, num_slots, warm.step, state.get("loadgen"), state.get("run_dir")
        )
        state["records"], state["scheduler"] = sched.records, sched
        t0 = clock()
        state["t0"] = t0
        payload.finished = loop.run(sched, t0)
        payload.wall_s = clock() - t0
        stage.stop()
        payload.t0 = t0
        payload.records = [r.to_dict() for r in warm.records + sched.records]
        payload.outputs = {**warm.outputs, **sched.outputs} if spec.run.record_tokens else {}
        payload.steps = loop.step_rows
        if rule is not None:
            payload.sequential = rule.summary(sched.records, payload.finished)
    else:
        stage.serve_forever()
    profiler.close()
    if sampler is not None:
        sampler.stop()
        payload.nvml_rows = sampler.rows()
        payload.nvml_note = sampler.note
    payload.comm_rows = ctx.comm.rec.as_dicts()
    payload.stage_rows = list(stage.timings)
    payload.memory = torch_memory_stats(ctx.device)
    payload.memory["device_name"] = (
        torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu"
    )
    return payload


def telemetry_sampler(
    device: torch.device, local_rank: int, interval_s: float
) -> NvmlSampler | None:
    """Each CUDA rank samples exactly its own GPU, found in NVML by the UUID CUDA gives it (not
    every GPU of a shared node, not an index CUDA and NVML may number differently). On CPU no GPU is
    used: local rank 0 samples its own process instead (the CPU twin's telemetry)."""
    if device.type == "cuda":
        return NvmlSampler(interval_s, uuids=[hdist.device_uuid(device)])
    return NvmlSampler(interval_s, uuids=[]) if local_rank == 0 else None


class ProfilerWindow:
    """Opt-in (``run.profile_steps: N``): a torch.profiler Chrome trace of N steps of every rank.

    The window skips each rank's first ``SKIP`` steps (start-up, warm-up), then records N steps
    and writes ``<run dir>/profile/rank<R>.json``. The profiler's own cost falls inside the window
    only, which is why it is exempt from the instrumentation-overhead budget.
    """

    SKIP = 8

    def __init__(self, steps: int, ctx, writer_dir):
        self.enabled = steps > 0
        self.steps, self.ctx, self.dir = (
            steps,
            ctx,
            Path(writer_dir) / "profile" if writer_dir else None,
        )
        self.seen = 0
        self.prof = None

    def step(self) -> None:
        self.seen += 1
        if self.seen == self.SKIP:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.ctx.device.type == "cuda":
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts, record_shapes=True)
            self.prof.__enter__()
        elif self.seen == self.SKIP + self.steps:
            self.close()

    def close(self) -> None:
        if self.prof is None or self.dir is None:
            return
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        self.dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.dir / f"rank{self.ctx.rank}.json"))


def warm_table_writer() -> None:
    """One empty parquet write to memory before serving: a process's first parquet write spends
    ~0.3 s setting pyarrow up, and inside the serving loop (the first progress flush, 2 s in) that
    stalls every rank's pipeline: it was the demo's worst inter-token gap (docs/performance.md)."""
    import io

    import pyarrow.parquet as pq

    from harness.results.schema import rows_to_table

    pq.write_table(rows_to_table("requests", []), io.BytesIO())


class _Progress:
    """Rank 0's progress line (every ~2 s) and periodic flush of completed requests."""

    def __init__(self, enabled: bool, state: dict, writer):
        self.enabled, self.state, self.writer = enabled, state, writer
        self._last = 0.0

    def __call__(self, now_s: float) -> None:
        if not self.enabled or not self.state["records"] or now_s - self._last < 2.0:
            return  # silent during warm-up (no measured records yet)
        self._last = now_s
        recs = [
            r if isinstance(r, RequestRecord) else RequestRecord.from_dict(r)
            for r in self.state["records"]
        ]
        p = progress(recs, now_s)
        ttft = f"{p.p99_ttft_ms:.0f} ms" if p.p99_ttft_ms is not None else "-"
        rate = f"{p.request_throughput:.2f}" if p.request_throughput is not None else "-"
        print(
            f"harness: [{p.completed}/{len(recs)} done, {p.in_flight} running] {rate} req/s, "
            f"p99 TTFT {ttft}, {now_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if self.writer is not None:
            self.writer.flush_requests(self.state["records"])
