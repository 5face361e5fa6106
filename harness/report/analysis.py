"""Pure derivations from a loaded run's tables, shared by the report, its plots and the DAG.

Nothing here measures or prints; every function takes DataFrames (or a ``Run``) and returns
plain Python data. Empty tables give empty results, never an exception.

Formulas (times in seconds unless the name says ms):
- per request (completed, non-warm-up): TTFT = first_token − arrival, E2E = finish − arrival,
  TPOT = (finish − first_token)/(n − 1) with n = number of token times (as harness.measure.metrics);
- throughput over time: completions (and output tokens) per bin of width ``bin_s`` / ``bin_s``;
- stage stats: harness.measure.stages (compute = Σ t_compute_end − t_recv_end, wait = Σ
  t_recv_end − t_recv_start, send = Σ t_send_end − t_compute_end, busy = compute / wall);
- comm per (group, op): count, Σ bytes, Σ (t_end − t_start) over every rank's rows;
- imbalance = max stage compute / mean stage compute.
"""

from __future__ import annotations

import math
from typing import Any

from harness.measure.metrics import RequestRecord, e2e_s, tokens_out, tpot_s, ttft_s
from harness.measure.stages import stage_stats as _stage_stats_rows
from harness.results.reader import as_number


def _rows(df) -> list[dict]:
    return [] if df is None or len(df) == 0 else df.to_dict("records")


def records(requests_df) -> list[RequestRecord]:
    out = []
    fields = RequestRecord.__dataclass_fields__
    for r in _rows(requests_df):
        d = {k: r[k] for k in fields if k in r}
        for k in ("admitted_s", "first_token_s", "finish_s"):
            d[k] = as_number(d.get(k))
        tt = d.get("token_times_s")
        d["token_times_s"] = [] if tt is None else [float(x) for x in tt]
        out.append(RequestRecord.from_dict(d))
    return out


def latencies_ms(requests_df) -> dict[str, list[float]]:
    """TTFT, TPOT, E2E (ms) of completed non-warm-up requests, each sorted ascending."""
    done = [r for r in records(requests_df) if r.completed and not r.warmup]
    out = {}
    for name, fn in (("ttft", ttft_s), ("tpot", tpot_s), ("e2e", e2e_s)):
        out[name] = sorted(v * 1e3 for v in map(fn, done) if v is not None)
    return out


def throughput_series(requests_df, bin_s: float | None = None) -> dict[str, list[float]]:
    """Completions/s and output tokens/s per time bin (non-warm-up requests, bins from the first
    arrival)."""
    main = [r for r in records(requests_df) if not r.warmup]
    done = [r for r in main if r.completed and r.finish_s is not None]
    if not done:
        return {"t_s": [], "requests_per_s": [], "tokens_per_s": [], "bin_s": bin_s or 0.0}
    t0 = min(r.arrival_s for r in main)
    t1 = max(r.finish_s for r in done)
    span = max(t1 - t0, 1e-9)
    if bin_s is None:
        bin_s = max(span / 20.0, 1e-3)
    n = max(1, math.ceil(span / bin_s))
    req, tok = [0.0] * n, [0.0] * n
    for r in done:
        req[min(n - 1, int((r.finish_s - t0) / bin_s))] += 1
        times = r.token_times_s or [r.finish_s] * tokens_out(r)
        for t in times:
            tok[min(n - 1, max(0, int((t - t0) / bin_s)))] += 1
    return {
        "t_s": [(i + 0.5) * bin_s for i in range(n)],
        "requests_per_s": [x / bin_s for x in req],
        "tokens_per_s": [x / bin_s for x in tok],
        "bin_s": bin_s,
    }


def stage_stats(run) -> list[dict]:
    """The summary's ``stage_stats`` when the run wrote them, else derived from the stages table."""
    given = run.summary.get("stage_stats") or []
    if given:
        return [dict(s) for s in given]
    rows = [
        r
        for r in _rows(run.stages)
        if all(
            as_number(r.get(k)) is not None
            for k in ("t_recv_start_s", "t_recv_end_s", "t_compute_end_s", "t_send_end_s")
        )
    ]
    return _stage_stats_rows(rows) if rows else []


def imbalance(stats: list[dict]) -> float | None:
    """max stage compute / mean stage compute; None without stage timings."""
    comp = [as_number(s.get("compute_s")) for s in stats]
    comp = [c for c in comp if c is not None]
    if not comp or sum(comp) <= 0:
        return None
    return max(comp) / (sum(comp) / len(comp))


def run_bubble(stats: list[dict]) -> float | None:
    """Mean of the stages' bubble ratios."""
    b = [as_number(s.get("bubble_ratio")) for s in stats]
    b = [x for x in b if x is not None]
    return sum(b) / len(b) if b else None


def measured_steps(stages_df) -> set[tuple[int, int]]:
    """(rank, step) pairs of the stages table: the run's measured (non-warm-up) steps."""
    return {(int(r["rank"]), int(r["step"])) for r in _rows(stages_df)}


def comm_by(
    comm_df, keys: tuple[str, ...] = ("group", "op"), only: set | None = None
) -> list[dict]:
    """Per key combination: count, bytes, time_s (Σ t_end − t_start; None when untimed), ranks.
    ``only``: keep rows whose (rank, step) is in it (e.g. :func:`measured_steps`)."""
    if comm_df is None or len(comm_df) == 0:
        return []
    df = comm_df
    if only is not None:
        steps = df["step"].fillna(-1).astype("int64").tolist()
        df = df[[(int(r), s) in only for r, s in zip(df["rank"].tolist(), steps)]]
        if len(df) == 0:
            return []
    dur = (df["t_end_s"].astype("float64") - df["t_start_s"].astype("float64")).clip(lower=0.0)
    df = df.assign(_dur=dur, _timed=dur.notna())
    out = []
    for k, g in df.groupby(list(keys), sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        out.append(
            {
                **{name: (int(v) if name in ("rank", "step") else v) for name, v in zip(keys, k)},
                "count": int(len(g)),
                "bytes": int(g["bytes"].sum()),
                "time_s": float(g["_dur"].sum()) if bool(g["_timed"].any()) else None,
                "ranks": sorted(int(x) for x in g["rank"].unique()),
            }
        )
    return out


def steps_per_rank(comm_df, stages_df) -> dict[int, int]:
    """Micro-batch steps each rank ran (stages table), or distinct comm steps when absent."""
    out: dict[int, set] = {}
    src = stages_df if stages_df is not None and len(stages_df) else comm_df
    for r in _rows(src):
        out.setdefault(int(r["rank"]), set()).add(int(r["step"]))
    return {k: len(v) for k, v in out.items()}


def tp_groups(layout, comm_df, stages_df) -> list[dict]:
    """One row per TP group: its ranks, stage, layers and its all-reduce traffic per rank."""
    per_rank: dict[int, dict] = {}
    for a in comm_by(comm_df, ("rank", "group", "op")):
        if a["group"] == "tp":
            d = per_rank.setdefault(a["rank"], {})
            d[a["op"]] = a
    steps = steps_per_rank(comm_df, stages_df)
    out = []
    for ranks in layout.tp_groups():
        p = layout.place(ranks[0])
        layers = layout.layers_of_stage(p.stage)
        ar = [per_rank.get(r, {}).get("all_reduce") for r in ranks]
        ar = [a for a in ar if a]
        count = sum(a["count"] for a in ar)
        nbytes = sum(a["bytes"] for a in ar)
        times = [a["time_s"] for a in ar if a["time_s"] is not None]
        n_steps = max((steps.get(r, 0) for r in ranks), default=0)
        out.append(
            {
                "ranks": ranks,
                "dp": p.dp,
                "stage": p.stage,
                "layers": f"{layers.start}-{layers.stop - 1}",
                "allreduce_count": count,
                "allreduce_bytes": nbytes,
                "allreduce_time_s": sum(times) if times else None,
                "allreduce_per_step": count / (len(ranks) * n_steps) if n_steps and ranks else None,
                "bytes_per_op": nbytes / count if count else None,
            }
        )
    return out


def memory_by_stage(memory_df) -> list[dict]:
    """Per stage: max measured peak, params, KV, and the predicted weights + KV (bytes)."""
    by: dict[int, dict] = {}
    for r in _rows(memory_df):
        s = by.setdefault(
            int(r["stage"]),
            {
                "stage": int(r["stage"]),
                "peak_bytes": None,
                "param_bytes": None,
                "kv_bytes": None,
                "predicted_bytes": None,
            },
        )
        for k in ("peak_bytes", "param_bytes", "kv_bytes"):
            v = as_number(r.get(k))
            if v is not None:
                s[k] = max(s[k] or 0.0, v)
        pw, pk = as_number(r.get("predicted_weight_bytes")), as_number(r.get("predicted_kv_bytes"))
        if pw is not None or pk is not None:
            s["predicted_bytes"] = max(s["predicted_bytes"] or 0.0, (pw or 0.0) + (pk or 0.0))
    return [by[k] for k in sorted(by)]


def nvml_series(nvml_df) -> dict[str, Any]:
    """Per device time series: gpu_util_pct, power_w, nvlink bytes/s (from counter deltas, else
    GPM), and for the CPU twin (device −1) rss_bytes and cpu_pct. Times from the first sample."""
    rows = _rows(nvml_df)
    if not rows:
        return {"devices": {}, "host": False}
    t0 = min(float(r["t_s"]) for r in rows)
    devs: dict[str, dict] = {}
    host = False
    for r in sorted(rows, key=lambda r: (str(r.get("node")), int(r["device"]), float(r["t_s"]))):
        dev = int(r["device"])
        host = host or dev < 0
        key = f"{r.get('node') or ''}:{'host' if dev < 0 else dev}".lstrip(":")
        d = devs.setdefault(
            key,
            {
                k: []
                for k in (
                    "t_s",
                    "gpu_util_pct",
                    "power_w",
                    "nvlink_bytes_per_s",
                    "rss_bytes",
                    "cpu_pct",
                )
            }
            | {"_prev_t": None},
        )
        t = float(r["t_s"]) - t0
        d["t_s"].append(t)
        for k in ("gpu_util_pct", "power_w", "rss_bytes", "cpu_pct"):
            d[k].append(as_number(r.get(k)))
        tx, rx = (
            as_number(r.get("nvlink_tx_delta_bytes")),
            as_number(r.get("nvlink_rx_delta_bytes")),
        )
        gtx, grx = (
            as_number(r.get("gpm_nvlink_tx_bytes_per_s")),
            as_number(r.get("gpm_nvlink_rx_bytes_per_s")),
        )
        rate = None
        if tx is not None and rx is not None and d["_prev_t"] is not None and t > d["_prev_t"]:
            rate = (tx + rx) / (t - d["_prev_t"])
        elif gtx is not None and grx is not None:
            rate = gtx + grx
        d["nvlink_bytes_per_s"].append(rate)
        d["_prev_t"] = t
    for d in devs.values():
        d.pop("_prev_t")
    return {"devices": devs, "host": host}


def has_values(series: list) -> bool:
    return any(v is not None for v in series)


def timeline(stages_df, dp: int = 0, tp: int = 0, max_steps: int = 16) -> list[dict]:
    """Stage rows of one pipeline (dp, tp rank) for a window of ``max_steps`` steps from the middle
    of the run (steady state), times relative to the window's first receive."""
    rows = [r for r in _rows(stages_df) if int(r["dp"]) == dp and int(r["tp"]) == tp]
    if not rows:
        return []
    steps = sorted({int(r["step"]) for r in rows})
    mid = max(0, len(steps) // 2 - max_steps // 2)
    window = set(steps[mid : mid + max_steps])
    sel = [r for r in rows if int(r["step"]) in window]
    t0 = min(as_number(r["t_recv_end_s"]) for r in sel)
    out = []
    for r in sorted(sel, key=lambda r: (int(r["stage"]), int(r["step"]))):
        vals = {
            k: as_number(r.get(k))
            for k in ("t_recv_start_s", "t_recv_end_s", "t_compute_end_s", "t_send_end_s")
        }
        if any(v is None for v in vals.values()):
            continue
        out.append(
            {
                "stage": int(r["stage"]),
                "step": int(r["step"]),
                **{k: v - t0 for k, v in vals.items()},
            }
        )
    return out
