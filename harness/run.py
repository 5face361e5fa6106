"""torchrun entry: one rank of a run. Wires spec -> dist -> model -> engine -> measure -> results.

``torchrun --nproc-per-node N -m harness.run CONFIG [--results-dir DIR]`` (argv is read by cli.py).

Every rank builds only its stage and TP shard. The first stage's TP rank 0 of each DP replica
coordinates (schedules and times requests); every other rank follows the pipeline. At the end
every rank's records are gathered to rank 0, which writes the run directory.

Failure: SIGTERM/SIGINT are taken by a thread (``sigwait``) so they are seen even while the main
thread waits inside a collective; rank 0 then writes what completed, marked incomplete, and the
process ends with exit 3 after a short grace. ``run.timeout_s`` does the same. A rank that raises
names itself on stderr and exits non-zero; torchrun then stops the others.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from harness import dist as hdist
from harness.commands.run import EXIT_INCOMPLETE, default_run_dir
from harness.engine.loop import ServeLoop
from harness.engine.scheduler import Scheduler
from harness.measure.nvml import NvmlSampler, torch_memory_stats
from harness.metrics import RequestRecord, progress
from harness.model.build import build_stage
from harness.model.weights import CheckpointWeights, SeededWeights
from harness.parallel.pp import PipelineStage
from harness.planner import plan as make_plan
from harness.results import RunWriter
from harness.run_summary import RankPayload, build_summary, partial_summary
from harness.workload import Request, build_trace, save_trace

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
GRACE_S = 5.0


def block_stop_signals() -> None:
    """Call before any thread starts: every thread inherits the mask, so only ``sigwait`` sees them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class StopGuard:
    """Turns SIGTERM/SIGINT or the run timeout into a stop request, and a hard exit after a grace."""

    def __init__(self, timeout_s: float, on_stop):
        self.reason: str | None = None
        self._event = threading.Event()
        self._on_stop = on_stop
        threading.Thread(target=self._wait_signal, daemon=True, name="harness-signals").start()
        threading.Thread(target=self._watchdog, args=(timeout_s,), daemon=True, name="harness-timeout").start()

    def is_set(self) -> bool:
        return self._event.is_set()

    def _trip(self, reason: str) -> None:
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        print(f"harness: stopping: {reason}", file=sys.stderr, flush=True)
        try:
            self._on_stop(reason)
        finally:
            time.sleep(GRACE_S)          # let the main thread end cleanly if it can
            os._exit(EXIT_INCOMPLETE)

    def _wait_signal(self) -> None:
        sig = signal.sigwait(STOP_SIGNALS)
        self._trip(f"received {signal.Signals(sig).name}")

    def _watchdog(self, timeout_s: float) -> None:
        if not self._event.wait(timeout_s):
            self._trip(f"run.timeout_s={timeout_s:g} s exceeded")


def _slots(plan, spec, max_seq: int) -> int:
    """KV slots per replica: enough for every micro-batch group at max_batch, within the planned capacity."""
    want = spec.micro_batches * spec.run.max_batch
    capacity = min(r.kv_token_capacity for r in plan.ranks) // max_seq
    return max(1, min(want, capacity))


WARMUP_ID_BASE = 1_000_000_000   # warm-up requests get ids no trace uses (and their own seeded prompts)


def _warmup_requests(trace_requests: list[Request], n: int) -> list[Request]:
    """n requests shaped like the trace's first ones, all arriving at once."""
    base = trace_requests[:n]
    return [Request(WARMUP_ID_BASE + i, 0.0, r.input_len, r.output_len, None) for i, r in enumerate(base)]


def worker(spec, results_dir: str | None, overrides: list[str]) -> int:
    ctx = hdist.init(spec.layout, spec.run.device, spec.parallel.gpu_map, spec.run.comm_timeout_s,
                     spec.run.instrument)
    rank0 = ctx.rank == 0
    run_dir = Path(results_dir) if results_dir else default_run_dir(spec.name)
    writer = _LockedWriter(RunWriter.create(run_dir, spec)) if rank0 else None
    state: dict = {"records": [], "t0": None, "run_dir": run_dir}

    def on_stop(reason: str) -> None:
        if writer is not None:
            writer.write_partial(partial_summary(spec, state["records"], reason), state["records"])

    guard = StopGuard(spec.run.timeout_s, on_stop)
    try:
        payload = _run_rank(ctx, spec, guard, state, writer)
        gathered = [None] * ctx.env.world_size if rank0 else None
        if ctx.env.world_size > 1:
            dist.gather_object(payload, gathered, dst=0)
        else:
            gathered = [payload]
        # Only rank 0 sees every replica's coordinator; the others vouch for themselves.
        complete = guard.reason is None and (not rank0 or all(p.finished for p in gathered if p.coordinator))
        if rank0:
            summary, tables = build_summary(spec, make_plan(spec), gathered, complete=complete,
                                            reason=guard.reason)
            writer.write_final(summary, tables, hostnames=summary["hardware"]["hosts"])
            print(f"harness: {summary['verdict']}: results in {run_dir}", file=sys.stderr, flush=True)
        if ctx.env.world_size > 1:
            dist.barrier()
        code = 0 if complete else EXIT_INCOMPLETE
        if spec.run.profile_steps > 0:
            # Seen with torch 2.13 (CPU): after a torch.profiler window, the process's teardown
            # (process group, interpreter exit) corrupts the heap ("free(): invalid next size").
            # Every result is on disk by now, so leave without the teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        hdist.shutdown()
        return code
    except BaseException as e:
        where = f"rank {ctx.rank} (dp {ctx.place.dp}, stage {ctx.place.stage}, tp {ctx.place.tp})"
        print(f"harness: {where} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if writer is not None:
            writer.write_partial(partial_summary(spec, state["records"], f"{where} failed: {type(e).__name__}: {e}"),
                                 state["records"])
        raise


def _run_rank(ctx, spec, guard: StopGuard, state: dict, writer) -> RankPayload:
    place = ctx.place
    dtype = DTYPES[spec.model.dtype]
    weights = CheckpointWeights(spec.model.checkpoint) if spec.model.checkpoint else SeededWeights(spec.run.seed)
    model = build_stage(spec.shape, spec.layout, place, ctx.comm, dtype=dtype, device=ctx.device, weights=weights)
    plan = make_plan(spec)
    max_seq = spec.run.max_seq_len or spec.shape.max_context
    num_slots = _slots(plan, spec, max_seq)
    kv_bytes = model.allocate_kv(num_slots, max_seq)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if hdist.fail_rank_request() == ctx.rank:
        raise RuntimeError("HARNESS_FAIL_RANK: failing on purpose (test-only)")

    trace = build_trace(spec.workload, spec.shape.vocab, max_seq)
    if ctx.rank == 0 and state.get("run_dir"):
        save_trace(trace, Path(state["run_dir"]) / "trace.jsonl")   # replay with workload.trace
    mine = [r for r in trace.requests if r.request_id % spec.layout.dp == place.dp]
    groups = spec.micro_batches
    # The widest micro-batch: max_batch rows padded to the longest prompt (or prefill chunk).
    widest = max((r.input_len for r in trace.requests), default=1)
    max_tokens = spec.run.max_batch * min(spec.run.prefill_chunk or widest, widest)
    stage = PipelineStage(ctx, model, spec.run.max_batch, max_tokens)
    profiler = ProfilerWindow(spec.run.profile_steps, ctx, writer_dir=state.get("run_dir"))
    stage.on_step = profiler.step if profiler.enabled else None
    sampler = NvmlSampler(spec.run.nvml_interval_s) if ctx.env.local_rank == 0 else None
    if sampler is not None:
        sampler.start()
    payload = RankPayload(rank=ctx.rank, dp=place.dp, stage=place.stage, tp=place.tp,
                          coordinator=place.stage == 0 and place.tp == 0, hostname=os.uname().nodename,
                          param_bytes=param_bytes, kv_bytes=kv_bytes, num_slots=num_slots)
    clock = time.monotonic
    if payload.coordinator:
        ticker = _Progress(ctx.rank == 0, state, writer)
        loop = ServeLoop(stage, groups, ctx.device, clock, place.dp, should_stop=guard.is_set, on_tick=ticker)
        warm = Scheduler(_warmup_requests(mine, spec.run.warmup_requests), trace.prompt_ids, num_slots=num_slots,
                         max_batch=spec.run.max_batch, max_seq_len=max_seq,
                         prefill_chunk=spec.run.prefill_chunk, replica=place.dp, warmup=True)
        w0 = clock()
        if spec.run.warmup_requests > 0:
            loop.run(warm, w0, warmup=True)
        payload.warmup_s = clock() - w0
        payload.warmup_steps = warm.step
        sched = Scheduler(mine, trace.prompt_ids, num_slots=num_slots, max_batch=spec.run.max_batch,
                          max_seq_len=max_seq, prefill_chunk=spec.run.prefill_chunk,
                          closed_loop_concurrency=trace.concurrency if trace.closed_loop else None,
                          replica=place.dp, first_step=warm.step)
        state["records"] = sched.records
        t0 = clock()
        state["t0"] = t0
        payload.finished = loop.run(sched, t0)
        payload.wall_s = clock() - t0
        stage.stop()
        payload.t0 = t0
        payload.records = [r.to_dict() for r in warm.records + sched.records]
        payload.outputs = {**warm.outputs, **sched.outputs} if spec.run.record_tokens else {}
        payload.steps = loop.step_rows
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
    payload.memory["device_name"] = (torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda"
                                     else "cpu")
    return payload


class ProfilerWindow:
    """Opt-in (``run.profile_steps: N``): a torch.profiler Chrome trace of N steps of every rank.

    The window skips each rank's first ``SKIP`` steps (start-up, warm-up), then records N steps
    and writes ``<run dir>/profile/rank<R>.json``. The profiler's own cost falls inside the window
    only, which is why it is exempt from the instrumentation-overhead budget.
    """

    SKIP = 8

    def __init__(self, steps: int, ctx, writer_dir):
        self.enabled = steps > 0
        self.steps, self.ctx, self.dir = steps, ctx, Path(writer_dir) / "profile" if writer_dir else None
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


class _LockedWriter:
    """The signal/timeout thread and the main thread may both write: one at a time."""

    def __init__(self, writer: RunWriter):
        self._w, self._lock = writer, threading.Lock()

    def __getattr__(self, name):
        method = getattr(self._w, name)

        def locked(*a, **kw):
            with self._lock:
                return method(*a, **kw)
        return locked


class _Progress:
    """Rank 0's progress line (every ~2 s) and periodic flush of completed requests."""

    def __init__(self, enabled: bool, state: dict, writer):
        self.enabled, self.state, self.writer = enabled, state, writer
        self._last = 0.0

    def __call__(self, now_s: float) -> None:
        if not self.enabled or not self.state["records"] or now_s - self._last < 2.0:
            return   # silent during warm-up (no measured records yet)
        self._last = now_s
        recs = [r if isinstance(r, RequestRecord) else RequestRecord.from_dict(r) for r in self.state["records"]]
        p = progress(recs, now_s)
        ttft = f"{p.p99_ttft_ms:.0f} ms" if p.p99_ttft_ms is not None else "-"
        rate = f"{p.request_throughput:.2f}" if p.request_throughput is not None else "-"
        print(f"harness: [{p.completed}/{len(recs)} done, {p.in_flight} running] {rate} req/s, "
              f"p99 TTFT {ttft}, {now_s:.0f} s", file=sys.stderr, flush=True)
        if self.writer is not None:
            self.writer.flush_requests(self.state["records"])


if __name__ == "__main__":
    block_stop_signals()
    from harness.cli import main as cli_main

    raise SystemExit(cli_main(["run", *sys.argv[1:]]))
