"""The cost of tracing vLLM with its own profiler (issue 29), on ONE vLLM server.

    flock /tmp/harness-heavy.lock timeout 1500 .venv/bin/python benchmarks/vllm_trace_cost.py \
        configs/tiny-tp2-pp4-vllm-cpu.yaml --pairs 3 --out /tmp/vtc

One server is launched with the profiler configured (``run.instrument: timing``) and serves
``--pairs`` pairs of runs of the spec, alternating ``run.instrument`` off and timing (so drift
hits both alike); a timing run has the profiled window between its warm-up and its measured
window, an off run has none. Per metric: each run's value, the median per mode, and the ratio
timing/off of the medians with the range of the per-pair ratios (the run-to-run noise shows in
the off runs' own spread). Then the window's own slowdown: the window's requests sent ``--probes``
times with the profiler and as often without (alternating), wall time each; ratio of medians,
and /stop_profile's blocking time. Writes ``OUT/result.json`` and every run directory under OUT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

METRICS = (
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "median_e2el_ms",
)


def one_run(spec_path, over, server, info, signals, run_dir: Path) -> dict:
    from harness.engines.serving import serve_trace
    from harness.engines.vllm.engine import VllmEngine
    from harness.spec.spec import load_spec

    spec = load_spec(spec_path, over)
    t = time.monotonic()
    rc = serve_trace(VllmEngine(run_dir, signals, server, info), spec, run_dir, True)
    s = json.loads((run_dir / "summary.json").read_text())
    vt = s.get("vllm_trace") or {}
    return {
        "dir": str(run_dir),
        "instrument": spec.run.instrument,
        "rc": rc,
        "wall_s": time.monotonic() - t,
        "metrics": {k: (s.get("metrics") or {}).get(k) for k in METRICS},
        "window": vt.get("window"),
        "traces": len(vt.get("files") or []),
        "checks_failed": [c["name"] for c in s.get("cross_checks") or [] if not c.get("ok")],
        "measured": {
            k: (s.get("measured") or {}).get(k)
            for k in ("tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage", "bubble_ratio")
        },
    }


async def window_probe(url: str, model: str, trace, prefix: str | None) -> dict:
    """The window's requests once, with the profiler (``prefix``) or without (None)."""
    import aiohttp

    from harness.engines.openai_server.driver import Target
    from harness.engines.vllm.profile import profiled_window

    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        return await profiled_window(
            session,
            Target(url, model),
            trace,
            lambda: time.monotonic() - t0,
            prefix or "unprofiled",
            profile=prefix is not None,
        )


def ratio_stats(off: list[float], on: list[float]) -> dict:
    pairs = [b / a for a, b in zip(off, on) if a and b is not None]
    mo, mn = statistics.median(off), statistics.median(on)
    return {
        "off": off,
        "timing": on,
        "median_off": mo,
        "median_timing": mn,
        "ratio_of_medians": mn / mo if mo else None,
        "pair_ratios": pairs,
        "pair_ratio_range": [min(pairs), max(pairs)] if pairs else None,
        "off_spread": [min(off) / mo, max(off) / mo] if mo else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    a = ap.parse_args(argv)
    from harness.engines.openai_server.stopping import StopSignals
    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record
    from harness.spec.spec import load_spec
    from harness.spec.workload import build_trace

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(a.config, a.overrides + ["run.instrument=timing"])
    result: dict = {"config": a.config, "overrides": a.overrides, "runs": [], "probes": []}
    with StopSignals() as signals:
        server = launch_server(spec, out)
        try:
            info = asyncio.run(bring_up(spec, server, asyncio.Event()))
            result["ready_s"] = info.ready_s
            for i in range(a.pairs):
                for mode in ("off", "timing"):
                    d = out / f"run{i}-{mode}"
                    over = a.overrides + [f"run.instrument={mode}"]
                    try:
                        r = one_run(a.config, over, server, info, signals, d)
                    except Exception as e:  # keep the server and the other runs
                        print(f"run {d} failed: {e!r}", file=sys.stderr, flush=True)
                        continue
                    result["runs"].append(r)
                    print(json.dumps({k: r[k] for k in ("dir", "rc", "wall_s")}), flush=True)
            trace = build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len or 128)
            for i in range(a.probes):
                for prof in (None, f"probe{i}"):
                    w = asyncio.run(
                        window_probe(server.launch.url, server.launch.model, trace, prof)
                    )
                    result["probes"].append({"profiled": prof is not None, **w})
        finally:
            result["server_stopped"] = stop_and_record(server, out)
    runs = result["runs"]
    by = {m: [r for r in runs if r["instrument"] == m] for m in ("off", "timing")}
    result["metrics"] = {
        k: ratio_stats(
            [r["metrics"][k] for r in by["off"]], [r["metrics"][k] for r in by["timing"]]
        )
        for k in METRICS
        if all(r["metrics"][k] is not None for r in runs)
    }
    on = [p["serve_s"] for p in result["probes"] if p["profiled"] and p.get("serve_s")]
    off = [p["serve_s"] for p in result["probes"] if not p["profiled"] and p.get("serve_s")]
    if on and off:
        result["window_slowdown"] = ratio_stats(off, on)
        result["stop_profile_s"] = [p["stop_s"] for p in result["probes"] if p["profiled"]]
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result.get(k) for k in ("metrics", "window_slowdown")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
