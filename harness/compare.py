"""Regression check of one run against a baseline, and the history of many runs.

Per metric: delta % = (new − base) / |base| · 100. Direction-aware verdict with threshold T (%):
  lower-is-better (latencies, bubble): delta > +T → regression, delta < −T → improved;
  higher-is-better (throughput, goodput): delta < −T → regression, delta > +T → improved;
  otherwise "same"; "n/a" when either value is missing; "info" rows (utilisation, memory) never
  decide. A base of 0 gives no percentage (n/a) unless both are 0 (same).
Runs of different models or layouts are not comparable: UsageError unless ``force``; so is an
incomplete run. Hardware or workload differences are named as warnings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.report.analysis import as_number
from harness.results import SUMMARY_FILE, Run, atomic_write_bytes, atomic_write_text, load_run

LOWER, HIGHER, INFO = "lower", "higher", "info"

# (source, key, label, better)
METRICS: list[tuple[str, str, str, str]] = [
    ("metrics", "request_throughput", "throughput (req/s)", HIGHER),
    ("metrics", "output_throughput", "output tokens/s", HIGHER),
    ("metrics", "total_token_throughput", "total tokens/s", HIGHER),
    ("metrics", "request_goodput", "goodput (req/s)", HIGHER),
]
for _m, _name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E")):
    for _st in ("mean", "median", "p90", "p99"):
        METRICS.append(("metrics", f"{_st}_{_m}_ms", f"{_name} {_st} (ms)", LOWER))
METRICS += [
    ("metrics", "p99_queue_ms", "queue p99 (ms)", LOWER),
    ("measured", "bubble_ratio", "bubble ratio", LOWER),
    ("measured", "gpu_utilization_pct", "GPU utilisation (%)", INFO),
    ("measured", "nvlink_utilization_pct", "NVLink utilisation (%)", INFO),
    ("measured", "memory_per_gpu_gb", "weights per GPU (GB)", INFO),
]


@dataclass
class Delta:
    key: str
    label: str
    better: str
    base: float | None
    new: float | None
    delta_pct: float | None
    verdict: str           # regression | improved | same | n/a | info


@dataclass
class Comparison:
    base: str
    new: str
    threshold_pct: float
    rows: list[Delta] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Delta]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def verdict(self) -> str:
        return "REGRESSION" if self.regressions else "OK"

    def to_dict(self) -> dict:
        return {"base": self.base, "new": self.new, "threshold_pct": self.threshold_pct, "verdict": self.verdict,
                "regressions": [r.key for r in self.regressions], "warnings": self.warnings,
                "rows": [asdict(r) for r in self.rows]}


def delta_pct(base: float | None, new: float | None) -> float | None:
    if base is None or new is None:
        return None
    if base == 0:
        return 0.0 if new == 0 else None
    return (new - base) / abs(base) * 100.0


def judge(better: str, d: float | None, threshold_pct: float) -> str:
    if better == INFO:
        return "info"
    if d is None:
        return "n/a"
    worse = d > threshold_pct if better == LOWER else d < -threshold_pct
    good = d < -threshold_pct if better == LOWER else d > threshold_pct
    return "regression" if worse else "improved" if good else "same"


def _identity(run: Run) -> dict[str, Any]:
    model = (run.spec or {}).get("model") or {}
    lay = run.summary.get("layout") or {}
    return {"model": (model.get("preset") or model.get("config"), model.get("dtype")),
            "layout": (lay.get("tp"), lay.get("pp"), lay.get("dp"), tuple(lay.get("layer_split") or ()))}


def _context(run: Run) -> dict[str, Any]:
    hw = run.summary.get("hardware") or {}
    return {"hardware": (hw.get("gpu"), hw.get("total_gpus")), "workload": (run.spec or {}).get("workload"),
            "slo": (run.spec or {}).get("slo")}


def compare_runs(base: Run, new: Run, threshold_pct: float = 5.0, force: bool = False) -> Comparison:
    if not threshold_pct >= 0:
        raise UsageError(f"--threshold: must be a percentage >= 0, got {threshold_pct}")
    cmp = Comparison(str(base.path), str(new.path), threshold_pct)
    for role, run in (("BASE", base), ("NEW", new)):
        if not run.complete:
            msg = (f"{role} {run.path} is incomplete ({run.summary.get('incomplete_reason')}); "
                   f"compare complete runs, or pass --force")
            if not force:
                raise UsageError(msg)
            cmp.warnings.append(msg)
    ib, inew = _identity(base), _identity(new)
    for what in ("model", "layout"):
        if ib[what] != inew[what]:
            msg = f"{what} differs: BASE {ib[what]} vs NEW {inew[what]}"
            if not force:
                raise UsageError(f"{msg}; these runs are not comparable (pass --force to compare anyway)")
            cmp.warnings.append(msg + " (compared with --force)")
    cb, cn = _context(base), _context(new)
    for what in ("hardware", "workload", "slo"):
        if cb[what] != cn[what]:
            cmp.warnings.append(f"{what} differs between the runs")
    for source, key, label, better in METRICS:
        b = as_number((base.summary.get(source) or {}).get(key))
        n = as_number((new.summary.get(source) or {}).get(key))
        if b is None and n is None:
            continue
        d = delta_pct(b, n)
        cmp.rows.append(Delta(key, label, better, b, n, d, judge(better, d, threshold_pct)))
    return cmp


def compare_dirs(base_dir: str | Path, new_dir: str | Path, threshold_pct: float = 5.0,
                 force: bool = False) -> Comparison:
    return compare_runs(load_run(base_dir, tables=False), load_run(new_dir, tables=False), threshold_pct, force)


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def to_markdown(cmp: Comparison) -> str:
    lines = [f"# Compare: {cmp.verdict}", "", f"BASE {cmp.base}", f"NEW  {cmp.new}",
             f"threshold {cmp.threshold_pct:g} %", ""]
    lines += [f"> warning: {w}" for w in cmp.warnings]
    lines += ["", "| metric | better | base | new | delta | verdict |", "|---|---|---|---|---|---|"]
    for r in cmp.rows:
        d = "—" if r.delta_pct is None else f"{r.delta_pct:+.1f} %"
        lines.append(f"| {r.label} | {r.better} | {_f(r.base)} | {_f(r.new)} | {d} | {r.verdict} |")
    if cmp.regressions:
        lines += ["", "Regressions: " + ", ".join(r.label for r in cmp.regressions)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- history

HISTORY_COLUMNS = ("started_utc", "name", "run_dir", "complete", "verdict", "git_sha", "gpu", "total_gpus",
                   "request_throughput", "output_throughput", "request_goodput", "p99_ttft_ms", "p99_tpot_ms",
                   "p99_e2el_ms", "bubble_ratio", "gpu_utilization_pct", "memory_per_gpu_gb")
HISTORY_PLOT = [("request_throughput", "throughput (req/s)"), ("p99_ttft_ms", "TTFT p99 (ms)"),
                ("p99_tpot_ms", "TPOT p99 (ms)"), ("bubble_ratio", "bubble ratio")]


def collect_history(root: str | Path) -> tuple[list[dict], list[str]]:
    """Every run directory under ``root`` (any depth), sorted by start time; plus the skipped ones."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory; give the folder that holds run directories (e.g. results)")
    rows, skipped = [], []
    for summary_path in sorted(root.rglob(SUMMARY_FILE)):
        d = summary_path.parent
        try:
            run = load_run(d, tables=False)
        except UsageError as e:
            skipped.append(str(e))
            continue
        s, m, meas, hw = run.summary, run.summary.get("metrics") or {}, run.summary.get("measured") or {}, \
            run.summary.get("hardware") or {}
        rows.append({"started_utc": s.get("started_utc"), "name": s.get("name"), "run_dir": str(d),
                     "complete": bool(s.get("complete")), "verdict": s.get("verdict"),
                     "git_sha": run.env.get("git_sha"), "gpu": hw.get("gpu"), "total_gpus": hw.get("total_gpus"),
                     **{k: as_number(m.get(k)) for k in ("request_throughput", "output_throughput", "request_goodput",
                                                    "p99_ttft_ms", "p99_tpot_ms", "p99_e2el_ms")},
                     **{k: as_number(meas.get(k)) for k in ("bubble_ratio", "gpu_utilization_pct", "memory_per_gpu_gb")}})
    if not rows:
        raise UsageError(f"{root}: no readable run directory (summary.json) found"
                         + (f"; skipped: {skipped[0]}" if skipped else "; run `harness run` first"))
    rows.sort(key=lambda r: (r["started_utc"] or "", r["run_dir"]))
    return rows, skipped


def history_markdown(rows: list[dict], skipped: list[str]) -> str:
    cols = ("started_utc", "name", "verdict", "complete", "request_throughput", "p99_ttft_ms", "p99_tpot_ms",
            "p99_e2el_ms", "bubble_ratio", "git_sha")
    lines = [f"# History: {len(rows)} run(s)", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_f(r[c]) if isinstance(r[c], float) else str(r[c]) if r[c] is not None else "—" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"> skipped: {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def write_history(rows: list[dict], skipped: list[str], out: str | Path) -> dict[str, Path]:
    """``out`` (markdown) plus the same table as .csv and .parquet, and a .png of key metrics."""
    import io

    import pandas as pd

    from harness.report.plots import plot_history

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.with_suffix("")
    df = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    files = {"markdown": atomic_write_text(out, history_markdown(rows, skipped)),
             "csv": atomic_write_text(base.with_suffix(".csv"), df.to_csv(index=False))}
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    files["parquet"] = atomic_write_bytes(base.with_suffix(".parquet"), buf.getvalue())
    files["png"] = plot_history(rows, HISTORY_PLOT, base.with_suffix(".png"))
    return files
