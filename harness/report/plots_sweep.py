"""The sweep's Pareto chart: output tokens/s per GPU against output tokens/s per user (as vLLM's
``plot_pareto`` and AIPerf draw it), from ``sweep.json`` alone.

Per layout one colour: measured points with their intervals as error bars (filled: the run met
every SLO; hollow: it did not, or could not decide), the simulator's curve over the same loads
dashed; the Pareto front of the measured points as a grey line; the region a TPOT target allows
(tokens/s per user ≥ 1000 / the target's ms) shaded; the best layout under the SLOs starred.
"""

from __future__ import annotations

from pathlib import Path

from harness.report.plots import _figure, _no_data, _save

COLORS = ("#3b75af", "#ef8636", "#519e3e", "#c53a32", "#8d69b8", "#84584e", "#d57dbf", "#7f7f7f")


def _err(v, lo, hi) -> tuple[float, float]:
    return (0.0 if lo is None else max(0.0, v - lo), 0.0 if hi is None else max(0.0, hi - v))


def plot_pareto(doc: dict, path: Path) -> Path:
    fig, (ax,) = _figure(width=11.0, height=5.5)
    ax.set_title(f"{doc.get('name')}: layouts × loads (measured ± interval; simulated dashed)")
    points = [
        (i, e, r["point"])
        for i, e in enumerate(doc.get("layouts") or [])
        for r in e.get("runs") or []
        if r.get("point")
    ]
    points = [(i, e, p) for i, e, p in points if p.get("per_gpu") is not None and p.get("per_user")]
    if not points:
        _no_data(ax, "no finished run")
        return _save(fig, path)
    for i, e in enumerate(doc["layouts"]):
        color = COLORS[i % len(COLORS)]
        name = e["name"] + (" (spec)" if e.get("is_spec_layout") else "")
        mine = sorted((p for j, _, p in points if j == i), key=lambda p: p["load"])
        if mine:
            xerr = list(
                zip(*[_err(p["per_user"], p["per_user_low"], p["per_user_high"]) for p in mine])
            )
            yerr = list(
                zip(*[_err(p["per_gpu"], p["per_gpu_low"], p["per_gpu_high"]) for p in mine])
            )
            ax.errorbar(
                [p["per_user"] for p in mine],
                [p["per_gpu"] for p in mine],
                xerr=xerr,
                yerr=yerr,
                fmt="none",
                ecolor=color,
                alpha=0.5,
                lw=1,
            )
            for p in mine:
                ok = p["verdict"] == "PASS"
                ax.plot(
                    p["per_user"],
                    p["per_gpu"],
                    "o",
                    ms=7,
                    color=color,
                    mfc=color if ok else "white",
                )
                ax.annotate(
                    f"{p['load']:g}",
                    (p["per_user"], p["per_gpu"]),
                    fontsize=7,
                    xytext=(4, 4),
                    textcoords="offset points",
                    color=color,
                )
            ax.plot(
                [p["per_user"] for p in mine],
                [p["per_gpu"] for p in mine],
                "-",
                color=color,
                lw=1,
                label=name,
            )
        sim = [
            q
            for q in ((e.get("predicted") or {}).get("points") or [])
            if q.get("per_gpu") is not None and q.get("per_user")
        ]
        if sim:
            ax.plot(
                [q["per_user"] for q in sim],
                [q["per_gpu"] for q in sim],
                "--",
                color=color,
                lw=1,
                alpha=0.7,
            )
    front = {(f["layout"], f["load"]) for f in doc.get("pareto_front") or []}
    fp = sorted(
        (p for _, _, p in points if (p["layout"], p["load"]) in front), key=lambda p: p["per_user"]
    )
    if fp:
        ax.plot(
            [p["per_user"] for p in fp],
            [p["per_gpu"] for p in fp],
            "-",
            color="#444444",
            lw=2,
            alpha=0.35,
            label="Pareto front (measured)",
        )
    tpot = doc.get("tpot_limit_ms")
    if tpot:
        ax.axvspan(
            1000.0 / tpot,
            ax.get_xlim()[1],
            color="#2e7d32",
            alpha=0.06,
            label=f"TPOT target {tpot:g} ms met by the mean",
        )
    best = doc.get("best")
    if best:
        ax.plot(
            best["per_user"],
            best["per_gpu"],
            "*",
            ms=18,
            color="#f1c40f",
            mec="black",
            label=f"best under SLOs: {best['layout']} @ {best['load']:g}",
        )
    ax.plot([], [], "o", color="#555555", label="filled: met every SLO; hollow: not, or undecided")
    ax.plot([], [], "--", color="#555555", label="simulated (calibrated per layout); labels: load")
    ax.set_xlabel("output tokens/s per user (1000 / mean TPOT ms)")
    ax.set_ylabel("output tokens/s per GPU")
    xs = [p["per_user"] for _, _, p in points]
    if max(xs) > 8 * min(xs):  # layouts a decade apart per user: a log axis keeps both readable
        ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)
