"""Where one decode step of the reference engine goes, part by part, from a run's own tables.

    .venv/bin/python benchmarks/step_breakdown.py [--config configs/tiny-tp2-pp4-vllm-cpu.yaml]
        [--checkpoint results/tiny-llama] [--requests 48] [--input 32] [--output 16]
        [--concurrency 8] [--out DIR] [--run DIR ...] [--vllm-run DIR] [--json F]

Without ``--run``: one ``harness run`` of the reference engine (closed loop, the issue's workload:
48 requests of 32 tokens in / 16 out, concurrency 8, the tiny checkpoint at TP2-PP4 on 8 gloo
ranks, ``instrument: timing``), then its breakdown. With ``--run DIR`` (repeatable): the breakdown
of runs already made (their tables pooled), e.g. a "before" and an "after" tree's.

The parts of a decode step (every step whose rows all decode, warm-up excluded), per role:

- coordinator (stage 0, TP rank 0), from ``steps`` (``t_schedule_s``, ``t_build_s``,
  ``t_submit_s``) and its ``stages``/``comm`` rows: *schedule* (``Scheduler.schedule``), *build*
  (the step's inputs from the rows), *inputs to device* (stage-clock recv part: header, the upload,
  TP broadcasts of header and ids), *forward* (embedding and layers, TP all-reduces excluded),
  *all-reduce* (the sum of its all-reduce rows in the step), *send (issue)* (the isends to stage 1
  issued), *collect wait* (its receives of the step's header and tokens: mostly waiting for the
  pipeline);
- other stages: *receive wait* (stage-clock recv part: waiting for and receiving header and
  input), *forward*, *all-reduce*, and *send (issue)*, on the last stage *sample + send (issue)*
  (the vocab-parallel all-gather, argmax, and the tokens' isend issued).

Each cell: median ms over the role's steps, with its 95 % distribution-free interval
(``harness.measure.intervals.quantile_interval``) and n. Timing on a 2-core host running 8 ranks
includes time a rank was descheduled: compare only runs made side by side.

vLLM's share (``--vllm-run`` a vLLM run directory of the same workload): its /metrics expose
request-level histograms only (inter-token latency, time per output token, queue, prefill and
decode time per request), not the parts of a step; the table shows its server-side inter-token
latency beside the reference's step period.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.measure.intervals import quantile_interval  # noqa: E402


def _table(run: Path, name: str) -> list[dict]:
    import pyarrow.parquet as pq

    path = run / f"{name}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def _span(a, b) -> float | None:
    return None if a is None or b is None else (b - a) * 1e3


def breakdown(runs: list[Path]) -> dict[str, dict[str, list[float]]]:
    """{role: {part: [ms per decode step]}} pooled over ``runs``."""
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        spec = json.loads((run / "summary.json").read_text()).get("layout") or {}
        steps = [s for s in _table(run, "steps") if s["phase"] == "decode" and not s["warmup"]]
        decode = {(s["replica"], s["step"]) for s in steps}
        pp = spec.get("pp") or 1 + max(r["stage"] for r in _table(run, "stages"))
        for s in steps:
            p = parts["coordinator"]
            if s.get("t_schedule_s") is not None:
                p["schedule"].append(_span(s["t_schedule_s"], s["t_build_s"]))
                p["build"].append(_span(s["t_build_s"], s["t_submit_s"]))
            p["submit to tokens (round trip)"].append(_span(s["t_submit_s"], s["t_done_s"]))
        comm: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for c in _table(run, "comm"):
            if c["t_start_s"] is None:
                continue
            key = (c["rank"], c["step"])
            label = c["op"] if c["phase"] != "sample" else f"sample {c['op']}"
            comm[key][label] += (c["t_end_s"] - c["t_start_s"]) * 1e3
        for r in _table(run, "stages"):
            if (r["dp"], r["step"]) not in decode:
                continue
            first, last = r["stage"] == 0, r["stage"] == pp - 1
            coord = first and r["tp"] == 0
            role = (
                "coordinator"
                if coord
                else ("stage 0, TP peer" if first else "last stage" if last else "middle stage")
            )
            ops = comm[(r["rank"], r["step"])]
            p = parts[role]
            recv = _span(r["t_recv_start_s"], r["t_recv_end_s"])
            fwd = _span(r["t_recv_end_s"], r["t_compute_end_s"])
            out = _span(r["t_compute_end_s"], r["t_send_end_s"])
            p["inputs to device" if coord else "receive wait"].append(recv)
            p["forward (without all-reduce)"].append(fwd - ops.get("all_reduce", 0.0))
            p["all-reduce"].append(ops.get("all_reduce", 0.0))
            # an isend's trace row ends when it is waited (later): the stage clock's span is the
            # issue; on the last stage it holds the sampling and the tokens' send
            p["sample + send (issue)" if last else "send (issue)"].append(out)
            if coord and pp > 1:
                p["collect wait"].append(ops.get("sample recv", 0.0))
    return parts


def _cell(values: list[float]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "—"
    iv = quantile_interval(xs, 0.5, 0.95)
    lo = "…" if iv.low is None else f"{iv.low:.2f}"
    hi = "…" if iv.high is None else f"{iv.high:.2f}"
    return f"{statistics.median(xs):.2f} [{lo}, {hi}] n={len(xs)}"


ROLES = ("coordinator", "stage 0, TP peer", "middle stage", "last stage")


def render(columns: dict[str, dict[str, dict[str, list[float]]]]) -> str:
    """Markdown: one row per (role, part), one column per breakdown (e.g. before / after)."""
    names = list(columns)
    lines = [
        "| role | part (ms per decode step, median [95 % CI] n) | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for role in ROLES:
        seen: list[str] = []
        for col in columns.values():
            seen += [k for k in col.get(role, {}) if k not in seen]
        for part in seen:
            cells = [_cell(columns[n].get(role, {}).get(part, [])) for n in names]
            lines.append(f"| {role} | {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def vllm_share(run: Path) -> str:
    """vLLM's own view of the same workload (its /metrics histograms, interpolated in buckets):
    inter-token latency (its step period as a request sees it) and per-request decode time."""
    s = json.loads((run / "summary.json").read_text())
    sm = s.get("server_metrics") or {}
    if not sm.get("available", True):
        return f"vLLM ({run.name}): no /metrics in this run"
    itl, dec = sm.get("itl") or {}, sm.get("decode") or {}
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    return (
        f"vLLM ({run.name}), server-side: inter-token latency mean {fmt(itl.get('mean_ms'))} ms, "
        f"p50 {fmt(itl.get('p50_ms'))} ms, p99 {fmt(itl.get('p99_ms'))} ms; decode time per "
        f"request mean {fmt(dec.get('mean_ms'))} ms. Its /metrics hold request-level histograms "
        "only: the parts of its step (scheduling, forward, sampling, communication) are not "
        "exposed there."
    )


def run_once(args, out: Path) -> Path:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tiny_checkpoint import fixed_length_sets

    sets = fixed_length_sets(args.checkpoint, args.requests, args.input, args.output) + [
        "workload.arrival=closed",
        f"workload.concurrency={args.concurrency}",
        "engine={kind: reference}",
        "run.instrument=timing",
    ]
    cmd = [sys.executable, "-m", "harness.cli", "run", args.config, "--results-dir", str(out)]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode not in (0, 1, 4):
        raise SystemExit(f"run failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml"))
    ap.add_argument("--checkpoint", default=str(REPO / "results" / "tiny-llama"))
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--input", type=int, default=32)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--run", action="append", default=[], help="NAME=DIR[,DIR...]: runs to read")
    ap.add_argument("--vllm-run", default=None)
    ap.add_argument("--json", default=None, help="write the raw per-step values here")
    args = ap.parse_args()
    columns: dict[str, dict] = {}
    if args.run:
        for item in args.run:
            name, _, dirs = item.rpartition("=")
            columns[name or dirs] = breakdown([Path(d) for d in dirs.split(",")])
    else:
        out = Path(args.out or tempfile.mkdtemp(prefix="breakdown-"))
        columns["this tree"] = breakdown([run_once(args, out)])
        print(f"run: {out}", file=sys.stderr)
    print(render(columns))
    for item in args.run:
        for d in item.rpartition("=")[2].split(","):
            m = json.loads((Path(d) / "summary.json").read_text())["metrics"]
            print(
                f"{d}: mean ITL {m.get('mean_itl_ms', 0):.1f} ms, p99 ITL "
                f"{m.get('p99_itl_ms', 0):.1f} ms, {m.get('request_throughput', 0):.2f} req/s"
            )
    if args.vllm_run:
        print("\n" + vllm_share(Path(args.vllm_run)))
    if args.json:
        Path(args.json).write_text(json.dumps(columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
