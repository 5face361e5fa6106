"""vLLM's profiled window → the run's ``comm``, ``stages`` and ``steps`` tables, measured claim
values, and the cross-checks against the planner (pure but for reading the trace files).

Measured claim values (the ids of harness.verdicts.claims), from the window's non-empty steps:
- tp_allreduce_bytes_per_layer: per rank and step, the TP all-reduce bytes less stage 0's
  embedding all-reduce, / the step's tokens (the all-reduces' first dimension) / the stage's
  layers; the mean over ranks and steps (vLLM: 2 × hidden × dtype bytes, as the planner)
- pp_sendrecv_bytes_per_stage: per boundary and step, the float bytes every TP rank of the
  sending stage sends (hidden states and residual, 1/tp each) / the step's tokens; the mean
  (vLLM: 2 × hidden × dtype bytes, twice the planner's formula: see ``trace_checks``)
- bubble_ratio: ``harness.measure.stages`` over the stages table (timing level only)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from harness.engines.vllm.profile import collect
from harness.engines.vllm.trace_checks import cross_checks, step_tokens
from harness.measure.comm_stats import per_group_op, with_bandwidth
from harness.measure.stages import pipeline_summary
from harness.measure.vllm_steps import step_rows
from harness.measure.vllm_tables import comm_rows, computed_tokens, stage_rows
from harness.measure.vllm_trace import read_rank
from harness.measure.vllm_trace_read import worker_of

PHASES = ("prefill", "mixed", "decode")
TRACE_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
WHERE = (
    "after the warm-up, before the measured window: its requests are not records of the run, "
    "and /stop_profile's trace writing ends before the measured window starts"
)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def per_token(spec, ranks, comm: list[dict]) -> tuple[float | None, float | None]:
    """(TP all-reduce bytes per layer per token, PP float bytes per token per boundary)."""
    lay = spec.layout
    tokens = step_tokens(spec, ranks, comm)
    ar: dict[tuple[int, int], int] = defaultdict(int)
    ar_n: dict[tuple[int, int], int] = defaultdict(int)
    first: dict[tuple[int, int], int] = {}
    sent: dict[tuple[int, int, int], int] = defaultdict(int)  # (dp, stage, step) -> bytes
    stage_of = {r.worker.rank: r.worker for r in ranks}
    for c in comm:
        if c["step"] is None:
            continue
        key = (c["rank"], c["step"])
        if c["op"] == "all_reduce" and c["group"] == "tp":
            ar[key] += c["bytes"]
            ar_n[key] += 1
            first.setdefault(key, c["bytes"])
        if c["op"] == "send" and c["group"] in ("pp", "pp_residual"):
            w = stage_of[c["rank"]]
            sent[(w.dp, w.pp, c["step"])] += c["bytes"]
    per_layer = []
    for (rank, step), b in ar.items():
        w = stage_of[rank]
        layers = lay.layer_split[w.pp]
        n = tokens.get((rank, step))
        if layers and n:
            emb = first[(rank, step)] if w.pp == 0 else 0
            per_layer.append((b - emb) / n / layers)
    per_boundary = []
    for (dp, stage, step), b in sent.items():
        rank0 = (dp * lay.pp + stage) * lay.tp
        n = tokens.get((rank0, step))
        if n:
            per_boundary.append(b / n)
    return _mean(per_layer), _mean(per_boundary)


def trace_parts(spec, files: list[Path], timed: bool) -> dict:
    """The traces of one window → tables, measured values, checks and the summary block."""
    lay = spec.layout
    ranks = []
    for f in files:
        w = worker_of(f.name, lay.tp, lay.pp)
        if w is not None:
            ranks.append(read_rank(f, w, TRACE_DTYPE.get(spec.model.dtype)))
    comm = comm_rows(ranks, lay.tp, lay.pp, timed)
    stages = stage_rows(ranks, comm) if timed else []
    steps, step_notes = step_rows(ranks, computed_tokens(comm, spec.shape.hidden), timed)
    pipe = pipeline_summary(stages) if stages else None
    ar_layer, pp_token = per_token(spec, ranks, comm)
    unknown: Counter = Counter()
    for r in ranks:
        unknown.update(r.unknown)
    block = {
        "files": [f.name for f in files],
        "ranks": sorted(r.worker.rank for r in ranks),
        "steps": {str(r.worker.rank): len(r.steps) for r in ranks},
        "empty_steps": {str(r.worker.rank): r.empty_steps for r in ranks},
        "step_phases": {p: n for p in PHASES if (n := sum(s["phase"] == p for s in steps))},
        "backends": sorted({o.entry.backend for r in ranks for o in r.ops}),
        "unknown_ops": dict(sorted(unknown.items())),
        "unpaired_backend_events": {
            str(r.worker.rank): dict(r.unpaired_time) for r in ranks if r.unpaired_time
        },
        "ops_without_backend_time": sum(1 for r in ranks for o in r.ops if not o.paired),
        "level": "timing" if timed else "counts",
    }
    return {
        "tables": {
            "comm": with_bandwidth(comm),
            **({"stages": stages} if stages else {}),
            **({"steps": steps} if steps else {}),
        },
        "measured": {
            "tp_allreduce_bytes_per_layer": ar_layer if lay.tp > 1 else None,
            "pp_sendrecv_bytes_per_stage": pp_token if lay.pp > 1 else None,
            "bubble_ratio": pipe["bubble_ratio"] if pipe else None,
        },
        "checks": cross_checks(spec, ranks, comm),
        "pipe": pipe,
        "comm_groups": per_group_op([c for c in comm if c["step"] is not None]),
        "block": block,
        "notes": step_notes,
    }


def add_trace(result, spec, run_dir: Path, window: dict | None, server) -> None:
    """Collect the window's traces into the run and add what they show to ``result``."""
    notes = result.extra.setdefault("notes", [])
    block: dict = {"window": window, "where": WHERE}
    result.extra["vllm_trace"] = block
    if window is None or window.get("error") or not window.get("requests"):
        why = (window or {}).get("error") or "no profiled window ran (the run stopped first)"
        notes.append(f"vLLM not traced: {why}")
        return
    folder = Path(server.launch.profile_dir).parent
    files = collect(folder, run_dir, window["prefix"], spec.layout.world_size)
    if not files:
        notes.append(f"vLLM not traced: no trace of window {window['prefix']} in {folder}")
        return
    try:
        parts = trace_parts(spec, files, spec.run.instrument == "timing")
    except (ValueError, KeyError, IndexError, TypeError, OSError) as e:  # an instrument: degrade
        block["files"] = [f.name for f in files]
        notes.append(f"vLLM trace not parsed ({type(e).__name__}: {e}); traces kept in vllm-trace/")
        return
    block.update(parts["block"])
    result.tables.update(parts["tables"])
    for k, v in parts["measured"].items():
        if v is not None:
            result.measured[k] = v
    result.extra["cross_checks"] = list(result.extra.get("cross_checks") or []) + parts["checks"]
    result.extra["comm"] = parts["comm_groups"]
    if parts["pipe"]:
        result.extra["stage_stats"] = parts["pipe"]["stages"]
        result.extra["stage_imbalance"] = parts["pipe"]["imbalance"]
    if block["unknown_ops"]:
        notes.append(
            "vLLM trace: communication-looking ops of no known backend, counted not parsed: "
            + ", ".join(f"{k} ×{v}" for k, v in block["unknown_ops"].items())
        )
    notes.extend(parts["notes"])
    if len(files) < spec.layout.world_size:
        notes.append(f"vLLM trace: {len(files)} of {spec.layout.world_size} workers' traces")
