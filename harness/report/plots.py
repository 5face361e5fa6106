"""The report's PNG plots (matplotlib, Agg canvas; no pyplot global state).

Each ``plot_*`` takes already-derived data (see ``harness.report.analysis``) and a path, writes a
PNG atomically and returns the path. Empty data never raises: the figure says "no data" and why.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.results.atomic import atomic_write_bytes

DPI = 90
PHASE_COLORS = {"wait": "#c8c8c8", "compute": "#3b75af", "send": "#ef8636"}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # constrained layout: one draw (bbox "tight" draws twice)
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _no_data(ax, why: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no data\n{why}",
        ha="center",
        va="center",
        fontsize=11,
        color="#666666",
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(ncols: int = 1, nrows: int = 1, width: float = 9.0, height: float = 3.4):
    fig = Figure(figsize=(width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def plot_latency_cdfs(
    lat_ms: dict[str, list[float]], slo_ms: dict[str, list[tuple[str, float]]], path: Path
) -> Path:
    """TTFT / TPOT / E2E empirical CDFs (ms), one vertical line per SLO target on that metric."""
    fig, axes = _figure(3, width=12)
    for ax, name in zip(axes, ("ttft", "tpot", "e2e")):
        xs = lat_ms.get(name) or []
        ax.set_title(f"{name.upper()} CDF")
        if not xs:
            _no_data(ax, "no completed requests")
            continue
        n = len(xs)
        ax.step(
            xs,
            [(i + 1) / n for i in range(n)],
            where="post",
            color="#3b75af",
            label=f"{n} requests",
        )
        for label, v in slo_ms.get(name, []):
            ax.axvline(v, color="#c0392b", linestyle="--", label=f"SLO {label}")
        ax.set_xlabel("ms")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("fraction of requests")
    return _save(fig, path)


def plot_throughput(series: dict[str, Any], path: Path) -> Path:
    fig, (ax,) = _figure()
    ax.set_title("Throughput over time (completed requests per bin)")
    if not series.get("t_s"):
        _no_data(ax, "no completed requests")
        return _save(fig, path)
    ax.bar(
        series["t_s"],
        series["requests_per_s"],
        width=series["bin_s"] * 0.9,
        color="#3b75af",
        label="requests/s",
    )
    ax.set_xlabel("seconds since the first arrival")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(
        series["t_s"], series["tokens_per_s"], color="#ef8636", marker=".", label="output tokens/s"
    )
    ax2.set_ylabel("output tokens/s")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_memory(rows: list[dict], capacity_bytes: float | None, label: str, path: Path) -> Path:
    """Per rank: predicted (weights + KV) next to measured (params + KV, and the peak)."""
    fig, (ax,) = _figure()
    ax.set_title(f"Memory per rank: predicted vs measured ({label})")
    if not rows:
        _no_data(ax, "memory table is empty")
        return _save(fig, path)
    gb = 1e9
    xs = list(range(len(rows)))
    w = 0.27

    def vals(f: Callable[[dict], Any]):
        return [(f(r) or 0) / gb for r in rows]

    ax.bar(
        [x - w for x in xs],
        vals(lambda r: (r.get("predicted_weight_bytes") or 0) + (r.get("predicted_kv_bytes") or 0)),
        w,
        color="#9ecae1",
        label="predicted weights + KV",
    )
    ax.bar(xs, vals(lambda r: r.get("param_bytes")), w, color="#3b75af", label="measured params")
    ax.bar(
        xs,
        vals(lambda r: r.get("kv_bytes")),
        w,
        bottom=vals(lambda r: r.get("param_bytes")),
        color="#6baed6",
        label="measured KV",
    )
    ax.bar(
        [x + w for x in xs],
        vals(lambda r: r.get("peak_bytes")),
        w,
        color="#ef8636",
        label="measured peak",
    )
    if capacity_bytes:
        ax.axhline(capacity_bytes / gb, color="#c0392b", linestyle="--", label="device capacity")
    small = [v for v in vals(lambda r: r.get("param_bytes")) if v > 0]
    big = max(vals(lambda r: r.get("peak_bytes")) + [0.0])
    if (
        small and big / min(small) > 50
    ):  # e.g. the CPU twin: process RSS dwarfs a tiny model's weights
        ax.set_yscale("log")
        ax.set_ylabel("GB (log scale)")
    else:
        ax.set_ylabel("GB")
    ax.set_xticks(xs, [f"r{int(r['rank'])}\ns{int(r['stage'])}" for r in rows], fontsize=8)
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, path)


def plot_utilization(nv: dict[str, Any], path: Path) -> Path:
    """GPU utilisation and power over time; on the CPU twin, the process's CPU % and RSS
    (labelled)."""
    fig, axes = _figure(2, width=12)
    devs = nv.get("devices") or {}
    gpu = {k: d for k, d in devs.items() if not k.endswith("host")}
    host = {k: d for k, d in devs.items() if k.endswith("host")}
    if gpu:
        axes[0].set_title("GPU utilisation (NVML)")
        axes[1].set_title("GPU power (NVML)")
        for k, d in gpu.items():
            _line(axes[0], d["t_s"], d["gpu_util_pct"], k)
            _line(axes[1], d["t_s"], d["power_w"], k)
        axes[0].set_ylabel("%")
        axes[1].set_ylabel("W")
    elif host:
        axes[0].set_title("CPU twin: process CPU % (no GPU; psutil)")
        axes[1].set_title("CPU twin: process RSS (no GPU; psutil)")
        for k, d in host.items():
            _line(axes[0], d["t_s"], d["cpu_pct"], k)
            _line(axes[1], d["t_s"], [None if v is None else v / 1e6 for v in d["rss_bytes"]], k)
        axes[0].set_ylabel("% of one core")
        axes[1].set_ylabel("MB")
    else:
        for ax in axes:
            _no_data(ax, "nvml table is empty")
        return _save(fig, path)
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            _no_data(ax, "not reported by this device")
    return _save(fig, path)


def _line(ax, xs, ys, label) -> None:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1)


def plot_comm(groups: list[dict], path: Path) -> Path:
    """Communication time and bytes per (group, op), summed over every rank."""
    fig, axes = _figure(2, width=12)
    axes[0].set_title("Communication time per group/op (all ranks)")
    axes[1].set_title("Communication bytes per group/op (all ranks)")
    if not groups:
        for ax in axes:
            _no_data(ax, "comm table is empty (a single-rank run issues no op)")
        return _save(fig, path)
    labels = [f"{g['group']}\n{g['op']}" for g in groups]
    colors = [
        "#3b75af" if g["group"] == "tp" else "#ef8636" if g["group"] == "pp" else "#7f7f7f"
        for g in groups
    ]
    times = [(g["time_s"] or 0.0) for g in groups]
    axes[0].bar(labels, times, color=colors)
    axes[0].set_ylabel("s")
    pos = [t for t in times if t > 0]
    if pos and max(pos) / min(pos) > 100:  # async sends (post → wait) can dwarf the rest
        axes[0].set_yscale("log")
        axes[0].set_ylabel("s (log scale)")
    axes[1].bar(labels, [g["bytes"] / 1e6 for g in groups], color=colors)
    axes[1].set_ylabel("MB")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


def plot_nvlink(nv: dict[str, Any], path: Path) -> Path:
    fig, (ax,) = _figure()
    ax.set_title("NVLink throughput (tx + rx per device)")
    devs = {k: d for k, d in (nv.get("devices") or {}).items() if not k.endswith("host")}
    shown = False
    for k, d in devs.items():
        ys = [None if v is None else v / 1e9 for v in d["nvlink_bytes_per_s"]]
        if any(v is not None for v in ys):
            _line(ax, d["t_s"], ys, k)
            shown = True
    if not shown:
        why = (
            "not available on this hardware (CPU twin: no NVLink)"
            if not devs
            else "not available on this hardware (no NVLink counters reported)"
        )
        _no_data(ax, why)
        return _save(fig, path)
    ax.set_xlabel("seconds")
    ax.set_ylabel("GB/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pipeline(rows: list[dict], pp: int, path: Path) -> Path:
    """Per stage, for a window of steps: wait (grey), compute (blue), send (orange) bars."""
    fig, (ax,) = _figure(height=0.6 * max(pp, 2) + 1.6)
    ax.set_title("Pipeline timeline (dp 0, tp rank 0; a window of steady-state steps)")
    if not rows:
        _no_data(ax, "stages table is empty")
        return _save(fig, path)
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for r in rows:
        for phase, a, b in (
            ("wait", "t_recv_start_s", "t_recv_end_s"),
            ("compute", "t_recv_end_s", "t_compute_end_s"),
            ("send", "t_compute_end_s", "t_send_end_s"),
        ):
            if r[b] > r[a]:
                bars.setdefault((r["stage"], phase), []).append((r[a] * 1e3, (r[b] - r[a]) * 1e3))
    for (y, phase), spans in bars.items():  # one artist per stage and phase
        ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=PHASE_COLORS[phase])
    first = [r for r in rows if r["stage"] == 0]
    for r in first[
        :: max(1, len(first) // 8)
    ]:  # a few step numbers, to follow one micro-batch down
        ax.text(
            (r["t_recv_end_s"] + r["t_compute_end_s"]) / 2 * 1e3,
            -0.5,
            f"step {r['step']}",
            ha="center",
            va="bottom",
            fontsize=6,
        )
    ax.set_yticks(range(pp), [f"stage {s}" for s in range(pp)])
    ax.invert_yaxis()
    ax.set_xlabel("ms (window start = 0)")
    for phase, c in PHASE_COLORS.items():
        ax.bar(0, 0, color=c, label=phase)
    ax.legend(fontsize=7, loc="upper right", ncol=3)
    return _save(fig, path)


def plot_history(
    rows: list[dict],
    metrics: list[tuple[str, str]],
    path: Path,
    bands: dict[str, dict] | None = None,
) -> Path:
    """Key metrics across runs (x = run start order), one panel per metric; ``bands`` (metric →
    {low, high}, ``harness.verdicts.history.noise_bands``): shaded where one more run falls."""
    fig, axes = _figure(1, len(metrics), width=10, height=2.2)
    labels = [r.get("started_utc") or "?" for r in rows]
    for ax, (key, title) in zip(axes, metrics):
        ax.set_title(title, fontsize=9)
        pts = [(i, r.get(key)) for i, r in enumerate(rows) if r.get(key) is not None]
        if not pts:
            _no_data(ax, f"no run reports {key}")
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        band = (bands or {}).get(key)
        if band:
            ax.axhspan(band["low"], band["high"], color="tab:green", alpha=0.15, label="noise band")
            ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        ax.set_xticks(
            range(len(rows)),
            labels if len(rows) <= 12 else [""] * len(rows),
            fontsize=6,
            rotation=30,
        )
    return _save(fig, path)
