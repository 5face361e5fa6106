"""Regression check of one run against a baseline, and the history of many runs.

Per metric: delta % = (new − base) / |base| · 100. Direction-aware verdict with threshold T (%):
  lower-is-better (latencies, bubble): delta > +T → regression, delta < −T → improved;
  higher-is-better (throughput, goodput): delta < −T → regression, delta > +T → improved;
  otherwise "same"; "n/a" when either value is missing; "info" rows (utilisation, memory) never
  decide. A base of 0 gives no percentage (n/a) unless both are 0 (same).
Runs of different models or layouts are not comparable: UsageError unless ``force``; so is an
incomplete run. Hardware or workload differences are named as warnings. Runs of the same model and
layout by different engines (the reference engine vs a vLLM deployment) are compared side by side:
the table names each engine and adds ratio = new / base."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.results.reader import Run, as_number, load_run

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
    ("client", "p99_ms", "client lag p99 (ms, external engines)", INFO),
]


@dataclass
class Delta:
    key: str
    label: str
    better: str
    base: float | None
    new: float | None
    delta_pct: float | None
    verdict: str  # regression | improved | same | n/a | info


@dataclass
class Comparison:
    base: str
    new: str
    threshold_pct: float
    rows: list[Delta] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    engines: tuple[str, str] | None = None  # (base, new) when the engines differ

    @property
    def regressions(self) -> list[Delta]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def verdict(self) -> str:
        return "REGRESSION" if self.regressions else "OK"

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "new": self.new,
            "threshold_pct": self.threshold_pct,
            "verdict": self.verdict,
            "regressions": [r.key for r in self.regressions],
            "warnings": self.warnings,
            "engines": list(self.engines) if self.engines else None,
            "rows": [asdict(r) for r in self.rows],
        }


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
    return {
        "model": (model.get("preset") or model.get("config"), model.get("dtype")),
        "layout": (
            lay.get("tp"),
            lay.get("pp"),
            lay.get("dp"),
            tuple(lay.get("layer_split") or ()),
        ),
    }


def _context(run: Run) -> dict[str, Any]:
    hw = run.summary.get("hardware") or {}
    return {
        "hardware": (hw.get("gpu"), hw.get("total_gpus")),
        "workload": (run.spec or {}).get("workload"),
        "slo": (run.spec or {}).get("slo"),
    }


def engine_name(run: Run) -> str:
    """``reference``, or an external engine's kind and version (``vllm 0.32.0``)."""
    eng = run.summary.get("engine") if isinstance(run.summary.get("engine"), dict) else {}
    return " ".join(str(x) for x in (run.engine_kind(), eng.get("version")) if x)


def compare_runs(
    base: Run, new: Run, threshold_pct: float = 5.0, force: bool = False
) -> Comparison:
    if not threshold_pct >= 0:
        raise UsageError(f"--threshold: must be a percentage >= 0, got {threshold_pct}")
    cmp = Comparison(str(base.path), str(new.path), threshold_pct)
    for role, run in (("BASE", base), ("NEW", new)):
        if not run.complete:
            msg = (
                f"{role} {run.path} is incomplete ({run.summary.get('incomplete_reason')}); "
                f"compare complete runs, or pass --force"
            )
            if not force:
                raise UsageError(msg)
            cmp.warnings.append(msg)
    ib, inew = _identity(base), _identity(new)
    for what in ("model", "layout"):
        if ib[what] != inew[what]:
            msg = f"{what} differs: BASE {ib[what]} vs NEW {inew[what]}"
            if not force:
                raise UsageError(
                    f"{msg}; these runs are not comparable (pass --force to compare anyway)"
                )
            cmp.warnings.append(msg + " (compared with --force)")
    for role, run in (("BASE", base), ("NEW", new)):
        if run.plan_note():
            cmp.warnings.append(f"{role} {run.path}: {run.plan_note()}")
    if base.engine_kind() != new.engine_kind():
        cmp.engines = (engine_name(base), engine_name(new))
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


def compare_dirs(
    base_dir: str | Path, new_dir: str | Path, threshold_pct: float = 5.0, force: bool = False
) -> Comparison:
    return compare_runs(
        load_run(base_dir, tables=False), load_run(new_dir, tables=False), threshold_pct, force
    )


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


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
        f"threshold {cmp.threshold_pct:g} %",
        "",
    ]
    lines += [f"> warning: {w}" for w in cmp.warnings]
    b, n = (f"base: {cmp.engines[0]}", f"new: {cmp.engines[1]}") if cmp.engines else ("base", "new")
    ratio = cmp.engines is not None
    lines += [
        "",
        f"| metric | better | {b} | {n} |" + (" ratio |" if ratio else "") + " delta | verdict |",
        "|---|---|---|---|" + ("---|" if ratio else "") + "---|---|",
    ]
    for r in cmp.rows:
        d = "—" if r.delta_pct is None else f"{r.delta_pct:+.1f} %"
        q = (
            ""
            if not ratio
            else (f" {r.new / r.base:.3g} |" if r.base and r.new is not None else " — |")
        )
        lines.append(
            f"| {r.label} | {r.better} | {_f(r.base)} | {_f(r.new)} |{q} {d} | {r.verdict} |"
        )
    if cmp.regressions:
        lines += ["", "Regressions: " + ", ".join(r.label for r in cmp.regressions)]
    return "\n".join(lines) + "\n"
