"""A synthetic run directory with realistic, mutually consistent tables (no torch, ~0.3 s).

``build_synthetic_run(path, SynthRun(...))`` simulates a pipelined decode: each stage's compute
time per step, TP all-reduces inside it, sends between stages and the tokens' return to stage 0,
with ``micro_batches`` steps in flight. The report, DAG and compare tests use it where a real
CPU run would be slower or could not show the case (an imbalanced split, a GPU's NVML rows).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

from harness.measure.metric_intervals import metric_intervals, samples_of
from harness.measure.metrics import RequestRecord, summarize
from harness.measure.nvml import COLUMNS as NVML_COLUMNS
from harness.measure.slo_verdicts import judge_slo
from harness.measure.stages import pipeline_summary, stage_stats
from harness.plan import planner
from harness.results.summary import new_summary, slo_rows
from harness.results.writer import RunWriter
from harness.spec.catalog import model_preset
from harness.spec.layout import Layout, even_split
from harness.spec.slo import per_request_thresholds_ms, resolve_targets
from harness.spec.spec import spec_from_dict


@dataclass
class SynthRun:
    name: str = "tiny-tp2-pp4-cpu"
    preset: str = "tiny"
    gpu: str = "cpu"
    tp: int = 2
    pp: int = 4
    dp: int = 1
    layer_split: tuple | None = None
    micro_batches: int | None = None  # default pp
    steps: int = 240
    rows_per_step: int = 4
    layer_compute_s: float = 0.0015  # per layer per step, before the embed/head extras
    stage_slowdown: tuple | None = None  # per stage multiplier of layer time
    embed_s: float = 0.0003
    head_s: float = 0.0015
    allreduce_s: float = 0.00005
    send_s: float = 0.0002
    num_requests: int = 24
    warmup_requests: int = 2
    rate_rps: float = 8.0
    output_len: int = 16
    queue_s: float = 0.002  # mean queue delay before admission
    tpot_s: float = 0.03
    latency_scale: float = 1.0  # multiplies TTFT, TPOT and E2E (regression tests)
    throughput_scale: float = 1.0  # divides the arrival spacing
    kv_slots: int = 32
    slo_targets: list = field(
        default_factory=lambda: ["ttft_p99_ms <= 2000", "tpot_p99_ms <= 200", "throughput_rps >= 2"]
    )
    complete: bool = True
    seed: int = 0
    with_nvml: bool = True
    record_tokens: bool = False

    @property
    def layout(self) -> Layout:
        shape = model_preset(self.preset)
        split = (
            tuple(self.layer_split) if self.layer_split else even_split(shape.num_layers, self.pp)
        )
        return Layout(self.tp, self.pp, self.dp, split)

    @property
    def m(self) -> int:
        return self.micro_batches or self.pp


def spec_dict(c: SynthRun) -> dict:
    lay = c.layout
    return {
        "name": c.name,
        "model": {"preset": c.preset, "config": None, "checkpoint": None, "dtype": "fp32"},
        "cluster": {"gpu": c.gpu, "nodes": 1, "gpus_per_node": lay.world_size, "overrides": {}},
        "parallel": {
            "tp": c.tp,
            "pp": c.pp,
            "dp": c.dp,
            "ep": 1,
            "layer_split": list(lay.layer_split),
            "gpu_map": None,
        },
        "workload": {
            "arrival": "poisson",
            "rate_rps": c.rate_rps,
            "num_requests": c.num_requests,
            "seed": 0,
            "input_len": {"dist": "uniform", "min": 16, "max": 64},
            "output_len": {"dist": "fixed", "value": c.output_len},
        },
        "slo": {"preset": None, "targets": list(c.slo_targets)},
        "run": {
            "max_batch": c.rows_per_step,
            "micro_batches": c.micro_batches,
            "warmup_requests": c.warmup_requests,
            "max_seq_len": 128,
            "record_tokens": c.record_tokens,
        },
    }


def _stage_time(c: SynthRun, s: int) -> float:
    lay = c.layout
    slow = c.stage_slowdown[s] if c.stage_slowdown else 1.0
    t = lay.layer_split[s] * c.layer_compute_s * slow
    return t + (c.embed_s if s == 0 else 0.0) + (c.head_s if s == c.pp - 1 else 0.0)


def simulate_pipeline(c: SynthRun) -> tuple[list, list, list]:
    """(steps rows, stages rows, comm rows) for replica 0..dp-1, times from the run's start."""
    lay, shape = c.layout, model_preset(c.preset)
    act_bytes = c.rows_per_step * shape.hidden * 4
    steps, stages, comm = [], [], []
    for d in range(c.dp):
        free = [0.0] * c.pp  # when each stage finished its last send
        done_at: list[float] = []  # when step k's tokens were back at stage 0
        for k in range(c.steps):
            ready = done_at[k - c.m] if k >= c.m else 0.0  # micro-batch slot free again
            t_in = max(ready, free[0])
            t_submit = t_in
            for s in range(c.pp):
                start = max(t_in, free[s])
                compute_end = start + _stage_time(c, s)
                send_end = compute_end + c.send_s
                for t in range(c.tp):
                    rank = lay.rank_of(d, s, t)
                    stages.append(
                        {
                            "rank": rank,
                            "dp": d,
                            "stage": s,
                            "tp": t,
                            "step": k,
                            "t_recv_start_s": free[s],
                            "t_recv_end_s": start,
                            "t_compute_end_s": compute_end,
                            "t_send_end_s": send_end,
                        }
                    )
                    comm.extend(
                        _rank_comm(
                            c, lay, rank, s, k, start, compute_end, send_end, free[s], act_bytes
                        )
                    )
                free[s] = send_end
                t_in = send_end
            done_at.append(t_in)
            n_prefill = c.rows_per_step if k % 10 == 0 else 0
            steps.append(
                {
                    "replica": d,
                    "step": k,
                    "available": 0,
                    "phase": "prefill" if n_prefill else "decode",
                    "n_rows": c.rows_per_step,
                    "n_prefill_rows": n_prefill,
                    "n_decode_rows": c.rows_per_step - n_prefill,
                    "n_tokens": c.rows_per_step * (32 if n_prefill else 1),
                    "padded_tokens": c.rows_per_step * (40 if n_prefill else 1),
                    "in_flight": min(k + 1, c.m),
                    "t_submit_s": t_submit,
                    "t_done_s": t_in,
                    "warmup": False,
                }
            )
    return steps, stages, comm


def _rank_comm(
    c, lay, rank, s, k, start, compute_end, send_end, recv_start, act_bytes
) -> list[dict]:
    rows = []

    def row(op, group, size, peer, dtype, numel, nbytes, t0, t1):
        return {
            "rank": rank,
            "step": k,
            "phase": "decode",
            "op": op,
            "group": group,
            "group_size": size,
            "peer": peer,
            "dtype": dtype,
            "numel": numel,
            "bytes": nbytes,
            "t_start_s": t0,
            "t_end_s": t1,
        }

    place = lay.place(rank)
    hdr = 4 + 3 * c.rows_per_step  # harness.engines.reference.parallel.pp header (int64)
    coord = lay.rank_of(place.dp, 0, 0)
    if c.pp > 1 and s > 0:  # header + hidden from the previous stage
        src = lay.rank_of(place.dp, s - 1, place.tp)
        rows.append(row("recv", "pp", 2, src, "int64", hdr, hdr * 8, recv_start, start))
        rows.append(
            row("recv", "pp", 2, src, "float32", act_bytes // 4, act_bytes, recv_start, start)
        )
    if c.pp > 1 and s == 0 and place.tp == 0:  # the coordinator collects step k's tokens
        src = lay.rank_of(place.dp, c.pp - 1, 0)
        rows.append(row("recv", "pp", 2, src, "int64", hdr, hdr * 8, send_end, send_end + 0.0001))
        rows.append(
            row(
                "recv",
                "pp",
                2,
                src,
                "int64",
                c.rows_per_step,
                c.rows_per_step * 8,
                send_end,
                send_end + 0.0001,
            )
        )
    if c.tp > 1 and s == 0:  # header + token ids to the TP peers
        rows.append(row("broadcast", "tp", c.tp, coord, "int64", hdr, hdr * 8, recv_start, start))
        rows.append(
            row(
                "broadcast",
                "tp",
                c.tp,
                coord,
                "int64",
                c.rows_per_step,
                c.rows_per_step * 8,
                recv_start,
                start,
            )
        )
    if c.tp > 1:
        n_ar = 2 * lay.layer_split[s] + (1 if s == 0 else 0)
        span = compute_end - start
        for i in range(n_ar):
            t1 = start + span * (i + 1) / (n_ar + 1)
            rows.append(
                row(
                    "all_reduce",
                    "tp",
                    c.tp,
                    -1,
                    "float32",
                    act_bytes // 4,
                    act_bytes,
                    t1 - c.allreduce_s,
                    t1,
                )
            )
        if s == c.pp - 1:  # greedy sampling: (max, argmax) per row in float64
            rows.append(
                row(
                    "all_gather",
                    "tp",
                    c.tp,
                    -1,
                    "float64",
                    2 * c.rows_per_step,
                    16 * c.rows_per_step,
                    compute_end,
                    compute_end + 0.0001,
                )
            )
    if c.pp > 1 and s < c.pp - 1:
        dst = lay.rank_of(place.dp, s + 1, place.tp)
        rows.append(row("send", "pp", 2, dst, "int64", hdr, hdr * 8, compute_end, send_end))
        rows.append(
            row("send", "pp", 2, dst, "float32", act_bytes // 4, act_bytes, compute_end, send_end)
        )
    if c.pp > 1 and s == c.pp - 1 and place.tp == 0:
        rows.append(row("send", "pp", 2, coord, "int64", hdr, hdr * 8, compute_end, send_end))
        rows.append(
            row(
                "send",
                "pp",
                2,
                coord,
                "int64",
                c.rows_per_step,
                c.rows_per_step * 8,
                compute_end,
                send_end,
            )
        )
    return rows


def make_requests(c: SynthRun) -> list[RequestRecord]:
    rng = random.Random(c.seed)
    recs, t = [], 0.0
    total = c.num_requests + c.warmup_requests
    for i in range(total):
        warm = i < c.warmup_requests
        if not warm:
            t += rng.expovariate(c.rate_rps * c.throughput_scale)
        arrival = 0.0 if warm else t
        queue = rng.expovariate(1.0 / c.queue_s) if c.queue_s > 0 else 0.0
        admitted = arrival + queue * c.latency_scale
        first = admitted + (0.04 + rng.random() * 0.02) * c.latency_scale
        step = c.tpot_s * c.latency_scale
        times = [first + j * step * (0.95 + 0.1 * rng.random()) for j in range(c.output_len)]
        for j in range(1, len(times)):
            times[j] = max(times[j], times[j - 1] + 1e-4)
        recs.append(
            RequestRecord(
                request_id=-1 - i if warm else i - c.warmup_requests,
                replica=0,
                arrival_s=arrival,
                admitted_s=admitted,
                first_token_s=times[0],
                token_times_s=times,
                finish_s=times[-1],
                input_len=rng.randint(16, 64),
                output_len=c.output_len,
                warmup=warm,
                completed=True,
            )
        )
    return recs


def make_nvml(c: SynthRun, wall_s: float) -> list[dict]:
    rows = []
    n = max(2, int(wall_s / 0.1))
    devices = range(c.layout.world_size) if c.gpu != "cpu" else [-1]
    for i in range(n):
        t = 100.0 + i * 0.1
        for d in devices:
            r = dict.fromkeys(NVML_COLUMNS)
            r["t_s"], r["device"], r["node"] = t, d, "node0"
            if d < 0:
                r["rss_bytes"] = 350_000_000 + i * 1000
                r["cpu_pct"] = 80.0 + (i % 5)
                r["sys_mem_used_bytes"] = 8_000_000_000
            else:
                r["mem_used_bytes"] = 40_000_000_000
                r["mem_total_bytes"] = 85_520_000_000
                r["gpu_util_pct"] = 70.0 + (i % 7)
                r["power_w"] = 400.0 + (i % 3) * 10
                r["nvlink_tx_delta_bytes"] = 0 if i == 0 else 2_000_000_000
                r["nvlink_rx_delta_bytes"] = 0 if i == 0 else 2_000_000_000
            rows.append(r)
    return rows


def make_memory(c: SynthRun, plan) -> list[dict]:
    """Params as the planner predicts them (the real run matches exactly); KV for ``kv_slots``
    slots."""
    lay, shape = c.layout, model_preset(c.preset)
    rows = []
    for rank in range(lay.world_size):
        p = lay.place(rank)
        w = plan.ranks[rank].weight_bytes
        kv = c.kv_slots * 128 * 2 * (shape.kv_dim // c.tp) * lay.layer_split[p.stage] * 4
        rows.append(
            {
                "rank": rank,
                "dp": p.dp,
                "stage": p.stage,
                "tp": p.tp,
                "param_bytes": w,
                "kv_bytes": kv,
                "peak_bytes": 300_000_000 + w + kv,
                "predicted_weight_bytes": w,
                "predicted_kv_bytes": plan.ranks[rank].kv_budget_bytes,
            }
        )
    return rows


def build_synthetic_run(path: str | Path, c: SynthRun | None = None, **overrides) -> Path:
    """Write a run directory at ``path`` through ``RunWriter`` and return it."""
    c = dataclasses.replace(c or SynthRun(), **overrides)
    lay = c.layout
    steps, stages, comm = simulate_pipeline(c)
    records = make_requests(c)
    targets = resolve_targets(None, c.slo_targets)
    thresholds = per_request_thresholds_ms(targets)
    metrics = summarize(records, slo_thresholds_ms=thresholds)
    samples = samples_of(records, thresholds, duration_s=metrics["duration_s"])
    slo = slo_rows(judge_slo(targets, metrics, samples, 0.95))
    wall = max(r.finish_s for r in records)
    env = {
        "harness_version": "0.1.0",
        "git_sha": None,
        "python": "3.11.7",
        "torch": "2.13.0",
        "cuda": None,
        "nccl": None,
        "driver": None,
        "gpu_count": 0,
        "gpu_names": [],
        "hostnames": ["node0"],
        "slurm_job_id": None,
        "transformers": "5.0.0",
        "backend": "gloo",
    }
    hardware = {
        "gpu": c.gpu,
        "gpu_name": "cpu" if c.gpu == "cpu" else c.gpu,
        "total_gpus": lay.world_size,
        "nodes": 1,
        "backend": "gloo" if c.gpu == "cpu" else "nccl",
    }
    layout = {"tp": c.tp, "pp": c.pp, "dp": c.dp, "layer_split": list(lay.layer_split)}
    plan = planner.plan(spec_from_dict(spec_dict(c)))
    mem = make_memory(c, plan)
    ps = pipeline_summary(stages)
    predicted = plan.to_dict()
    weights = [m["param_bytes"] for m in mem]
    tp_ar = 2 * model_preset(c.preset).hidden * 4 if c.tp > 1 else None  # per layer per token, fp32
    measured = {
        "throughput_rps": metrics["request_throughput"],
        "bubble_ratio": ps["bubble_ratio"],
        "total_gpus": lay.world_size,
        "memory_per_gpu_gb": max(weights) / 1e9,
        "memory_balance_epsilon": max(weights) / (sum(weights) / len(weights)) - 1,
        "model_memory_gb": sum(m["param_bytes"] for m in mem if m["dp"] == 0) / 1e9,
        "tp_allreduce_bytes_per_layer": tp_ar,
        "pp_sendrecv_bytes_per_stage": model_preset(c.preset).hidden * 4 if c.pp > 1 else None,
        "gpu_utilization_pct": None if c.gpu == "cpu" else 73.0,
        "nvlink_utilization_pct": None if c.gpu == "cpu" else 4.4,
        "stage_memory_gb": [
            sum(m["param_bytes"] for m in mem if m["stage"] == s and m["dp"] == 0) / 1e9
            for s in range(c.pp)
        ],
    }
    layout["micro_batches"] = c.m
    layout["kv_slots_per_replica"] = c.kv_slots
    writer = RunWriter(path)
    summary = new_summary(c.name, hardware, layout, predicted, started_utc="2025-01-01T00:00:00Z")
    writer.start(spec_dict(c), env, summary)
    writer.flush_requests(records[: len(records) // 2])
    summary.update(
        metrics=metrics,
        intervals=metric_intervals(samples, 0.95),
        slo=slo,
        wall_s=wall,
        warmup_s=0.5,
        measured=measured,
        stage_stats=stage_stats(stages),
        complete=c.complete,
        started_utc="2025-01-01T00:00:00Z",
        finished_utc="2025-01-01T00:00:10Z",
    )
    if not c.complete:
        summary["incomplete_reason"] = "received SIGTERM"
    tokens = (
        {r.request_id: list(range(len(r.token_times_s))) for r in records}
        if c.record_tokens
        else None
    )
    writer.flush_requests(records, tokens=tokens)
    tables = {"steps": steps, "comm": comm, "stages": stages, "memory": mem}
    if c.with_nvml:
        tables["nvml"] = make_nvml(c, wall)
    writer.write_final(summary, tables)
    return Path(path)


# ---------------------------------------------------------------- the real CPU demo run (once per
# session)

REPO = Path(__file__).resolve().parent.parent


def real_cpu_run(tmp_path_factory) -> Path:
    """The real CPU demo run directory (``harness run configs/tiny-tp2-pp4-cpu.yaml``), made once
    per test session and shared with tests/test_run.py (see tests/demo_run.py). Report and DAG tests
    write into it, which is what ``harness report`` does too."""
    from demo_run import demo

    return demo(tmp_path_factory).run_dir
