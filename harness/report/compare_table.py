"""``harness compare``'s table: each metric's base, new, change, the change's interval, the floor
that matters and the verdict (``harness.verdicts.compare``), as markdown."""

from __future__ import annotations

from harness.verdicts.compare import Comparison, Delta


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _interval(r: Delta) -> str:
    if r.low_pct is None and r.high_pct is None:
        return "—" if not r.basis or r.basis.startswith("no ") else "open"
    lo = "open" if r.low_pct is None else f"{r.low_pct:+.0f}"
    hi = "open" if r.high_pct is None else f"{r.high_pct:+.0f}"
    return f"[{lo}, {hi}] %"


def to_markdown(cmp: Comparison) -> str:
    title = f"# Compare: {cmp.verdict}"
    if cmp.engines:
        forced = any("(compared with --force)" in w for w in cmp.warnings)
        title += f" — {cmp.engines[0]} vs {cmp.engines[1]}, side by side" + (
            "" if forced else " (same model and layout)"
        )
    lines = [
        title,
        "",
        f"BASE {cmp.base}",
        f"NEW  {cmp.new}",
        f"threshold {cmp.threshold_pct:g} %, confidence {cmp.confidence * 100:g} % "
        + (
            f"(intervals from both runs' requests and the run-to-run spread of {cmp.history_runs} "
            "earlier runs)"
            if cmp.history_runs
            else "(intervals from both runs' requests)"
        ),
        "",
    ]
    lines += [f"> warning: {w}" for w in cmp.warnings]
    b, n = (f"base: {cmp.engines[0]}", f"new: {cmp.engines[1]}") if cmp.engines else ("base", "new")
    ratio = cmp.engines is not None
    lines += [
        "",
        f"| metric | better | {b} | {n} |"
        + (" ratio |" if ratio else "")
        + f" delta | {cmp.confidence * 100:g} % interval | floor | verdict |",
        "|---|---|---|---|" + ("---|" if ratio else "") + "---|---|---|---|",
    ]
    for r in cmp.rows:
        d = "—" if r.delta_pct is None else f"{r.delta_pct:+.1f} %"
        q = (
            ""
            if not ratio
            else (f" {r.new / r.base:.3g} |" if r.base and r.new is not None else " — |")
        )
        floor = "—" if not r.floor else f"{r.floor:.3g}"
        lines.append(
            f"| {r.label} | {r.better} | {_f(r.base)} | {_f(r.new)} |{q} {d} | {_interval(r)} | "
            f"{floor} | {r.verdict} |"
        )
    if cmp.regressions:
        lines += ["", "Regressions: " + ", ".join(r.label for r in cmp.regressions)]
    if cmp.suspects:
        labels = {r.key: r.label for r in cmp.rows}
        lines += [
            "",
            "Worse beyond the threshold by the point estimate, not with confidence (more requests, "
            "repeats or a history would decide): " + ", ".join(labels[k] for k in cmp.suspects),
        ]
    lines += [
        "",
        "regression/improved: the whole interval is beyond the threshold and the change beyond "
        "the floor (ms: the smallest change that matters); same: the interval is within the "
        "threshold or the floor; inconclusive: neither.",
    ]
    return "\n".join(lines) + "\n"
