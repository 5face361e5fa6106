"""Regression check of one run against a baseline, each metric's change with its interval.

Per metric: delta % = (new − base) / |base| · 100, its interval at confidence c (default 0.95) from
the per-request samples of both runs and, with ``history``, the run-to-run variation of earlier
runs (``harness.verdicts.change``), and a direction-aware verdict with threshold T (%) and the
smallest absolute change that matters (below): ``regression`` / ``improved`` only when the change
is beyond T with confidence; ``same`` when it is within T (or within the floor) with confidence;
``inconclusive`` otherwise; ``n/a`` when either value is missing; ``info`` rows (utilisation,
memory) never decide. A base of 0 gives no percentage (n/a) unless both are 0 (same).

What matters, for latency rows: a change must also exceed a floor in ms. By default the floor is
``min_effect_e2e_pct`` (1 %) of the base run's E2E of the same statistic, carried into a
request's E2E: queue and TTFT changes count as they are, a TPOT or ITL change times (output
tokens − 1) per request, so a queue p99 moving by 15 ms inside a 2-second E2E does not decide
alone while a TPOT change that slows every request does. ``min_effect`` ({family or key: ms})
states the floor per metric instead.

Overall: REGRESSION when a row is a regression; INCONCLUSIVE when none is, but a row's point change
is worse than T and its floor without the interval to confirm it; else OK.

Runs of different models or layouts are not comparable: UsageError unless ``force``; so is an
incomplete run. Hardware or workload differences are named as warnings. Runs of the same model and
layout by different engines (the reference engine vs a vLLM deployment) are compared side by side:
the table names each engine and adds ratio = new / base."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import UsageError
from harness.measure.metric_intervals import DEFAULT_CONFIDENCE, Samples, interval_of, samples_of
from harness.results.bench_file import run_records
from harness.results.reader import Run, as_number
from harness.spec.slo import per_request_thresholds_ms, resolve_targets
from harness.verdicts.change import HIGHER, INFO, LOWER, Change, change, row_verdict, suspected

DEFAULT_MIN_EFFECT_E2E_PCT = 1.0
FAMILIES = ("ttft", "tpot", "itl", "e2el", "queue")

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
    verdict: str  # regression | improved | same | inconclusive | n/a | info
    low_pct: float | None = None  # the change's interval (%), None: open
    high_pct: float | None = None
    floor: float | None = None  # the smallest change that matters, in the metric's unit
    basis: str = ""  # what the interval rests on


@dataclass
class Comparison:
    base: str
    new: str
    threshold_pct: float
    rows: list[Delta] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    engines: tuple[str, str] | None = None  # (base, new) when the engines differ
    confidence: float = DEFAULT_CONFIDENCE
    history_runs: int = 0
    suspects: list[str] = field(default_factory=list)  # worse by the point only

    @property
    def regressions(self) -> list[Delta]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def verdict(self) -> str:
        if self.regressions:
            return "REGRESSION"
        return "INCONCLUSIVE" if self.suspects else "OK"

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "new": self.new,
            "threshold_pct": self.threshold_pct,
            "confidence": self.confidence,
            "history_runs": self.history_runs,
            "verdict": self.verdict,
            "regressions": [r.key for r in self.regressions],
            "inconclusive": self.suspects,
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
    """The verdict of a change known exactly (no interval): beyond the threshold or not."""
    return row_verdict(better, None, Change(d, d, d, "exact"), threshold_pct)


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


def run_samples(run: Run) -> Samples | None:
    """The per-request samples of a run read with its requests table, as its summary counted
    them (goodput thresholds, latency origin, duration); None without requests."""
    table = run.tables.get("requests")
    if table is None or "requests" in run.absent or len(table) == 0:
        return None
    records, _ = run_records(table.to_dict("records"))
    spec, summary = run.spec or {}, run.summary
    engine = summary.get("engine") if isinstance(summary.get("engine"), dict) else {}
    slo = spec.get("slo") or {}
    if "goodput_ms" in engine:
        goodput = engine["goodput_ms"]
    else:
        goodput = slo.get("goodput") or per_request_thresholds_ms(
            resolve_targets(slo.get("preset"), slo.get("targets") or [])
        )
    origin = engine.get("latency_origin") or "arrival"
    duration = (summary.get("metrics") or {}).get("duration_s")
    return samples_of(records, goodput or None, origin, as_number(duration))


def _floor(
    key: str, base_metrics: Mapping, min_effect: Mapping[str, float], e2e_pct: float
) -> float:
    """The smallest change (ms) of latency row ``key`` that matters (module docstring); 0 for
    rates."""
    stat, _, rest = key.partition("_")
    family = rest[: -len("_ms")] if rest.endswith("_ms") else ""
    if family not in FAMILIES:
        return float(min_effect.get(key, 0.0))
    for name in (key, family):
        if name in min_effect:
            return float(min_effect[name])
    e2e = as_number(base_metrics.get(f"{stat}_e2el_ms")) or as_number(
        base_metrics.get("mean_e2el_ms")
    )
    if e2e is None:
        return 0.0
    floor = e2e * e2e_pct / 100.0
    if family in ("tpot", "itl"):  # a per-token change, carried over a request's tokens
        done = as_number(base_metrics.get("completed")) or 0.0
        tokens = (as_number(base_metrics.get("total_output_tokens")) or 0.0) / max(done, 1.0)
        floor /= max(tokens - 1.0, 1.0)
    return floor


def _bounds(samples: Samples | None, key: str, confidence: float):
    if samples is None:
        return None
    iv = interval_of(samples, key, confidence)
    return None if iv is None else (iv.low, iv.high)


def check_min_effect(min_effect: Mapping[str, float] | None) -> dict[str, float]:
    """``--min-effect`` entries: a family (ttft, tpot, itl, e2el, queue) or a metric key of the
    table, each a number ≥ 0 in the metric's unit."""
    keys = set(FAMILIES) | {key for _, key, _, _ in METRICS}
    out = {}
    for name, value in (min_effect or {}).items():
        if name not in keys:
            raise UsageError(
                f"--min-effect: unknown metric {name!r}; use a family ({', '.join(FAMILIES)}) "
                "or a key of the compare table (e.g. p99_queue_ms)"
            )
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise UsageError(f"--min-effect: {name}={value!r} must be a number >= 0")
        out[name] = float(value)
    return out


def compare_runs(
    base: Run,
    new: Run,
    threshold_pct: float = 5.0,
    force: bool = False,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_effect: Mapping[str, float] | None = None,
    min_effect_e2e_pct: float = DEFAULT_MIN_EFFECT_E2E_PCT,
    history: Sequence[Mapping[str, Any]] = (),
    runs: tuple[Sequence[Mapping], Sequence[Mapping]] | None = None,
) -> Comparison:
    """``runs``: each side's run summaries when a side is a repeats folder (a single run: its
    own), whose run-to-run variation gives every row's interval (``harness.verdicts.repeats``).
    ``base`` and ``new`` loaded with their requests table (``load_run(d, ("requests",))``;
    without it a row's interval rests on ``history`` alone); ``history``: earlier runs' summaries
    (``harness.verdicts.history.comparable_history``)."""
    if not threshold_pct >= 0:
        raise UsageError(f"--threshold: must be a percentage >= 0, got {threshold_pct}")
    if not 0.5 < confidence < 1:
        raise UsageError(f"--confidence: must be in (0.5, 1), e.g. 0.95; got {confidence}")
    if not min_effect_e2e_pct >= 0:
        raise UsageError(f"--min-effect-e2e: must be a percentage >= 0, got {min_effect_e2e_pct}")
    floors = check_min_effect(min_effect)
    cmp = Comparison(str(base.path), str(new.path), threshold_pct, confidence=confidence)
    cmp.history_runs = len(history)
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
    sb, sn = (None, None) if runs else (run_samples(base), run_samples(new))
    if not history and not runs:
        cmp.warnings.append(
            "no history: the intervals hold the sampling within each run only, not the variation "
            "from run to run (a shared machine's load): give --history DIR with 3 or more earlier "
            "runs of this spec"
        )
    if (sb is None or sn is None) and not runs:
        cmp.warnings.append(
            "a run has no requests table: rows rest on the history alone, or cannot decide"
        )
    cmp.rows, cmp.suspects = compare_rows(
        base.summary,
        new.summary,
        sb,
        sn,
        history,
        threshold_pct=threshold_pct,
        confidence=confidence,
        floors=floors,
        min_effect_e2e_pct=min_effect_e2e_pct,
        runs=runs,
    )
    return cmp


def compare_rows(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    sb: Samples | None,
    sn: Samples | None,
    history: Sequence[Mapping[str, Any]] = (),
    *,
    threshold_pct: float = 5.0,
    confidence: float = DEFAULT_CONFIDENCE,
    floors: Mapping[str, float] | None = None,
    min_effect_e2e_pct: float = DEFAULT_MIN_EFFECT_E2E_PCT,
    runs: tuple[Sequence[Mapping], Sequence[Mapping]] | None = None,
) -> tuple[list[Delta], list[str]]:
    """The table's rows from two summaries and their samples (module docstring), and the keys of
    the rows worse than the threshold by the point alone (suspects)."""
    rows, suspects = [], []
    base_metrics = base.get("metrics") or {}
    for source, key, label, better in METRICS:
        b = as_number((base.get(source) or {}).get(key))
        n = as_number((new.get(source) or {}).get(key))
        if b is None and n is None:
            continue
        past = [as_number((h.get(source) or {}).get(key)) for h in history]
        each = None
        if runs is not None:
            each = tuple([as_number((s.get(source) or {}).get(key)) for s in side] for side in runs)
        ch = change(
            b,
            n,
            _bounds(sb, key, confidence),
            _bounds(sn, key, confidence),
            [v for v in past if v is not None],
            confidence,
            runs=each,
        )
        floor = (
            _floor(key, base_metrics, floors or {}, min_effect_e2e_pct) if better != INFO else None
        )
        verdict = row_verdict(better, b, ch, threshold_pct, floor or 0.0)
        rows.append(
            Delta(
                key, label, better, b, n, ch.pct, verdict, ch.low_pct, ch.high_pct, floor, ch.basis
            )
        )
        if verdict == "inconclusive" and suspected(better, b, ch, threshold_pct, floor or 0.0):
            suspects.append(key)
    return rows, suspects


def compare_dirs(
    base_dir: str | Path,
    new_dir: str | Path,
    threshold_pct: float = 5.0,
    force: bool = False,
    *,
    history_dir: str | Path | None = None,
    **options: Any,
) -> Comparison:
    """``compare_runs`` of two run directories; ``history_dir``: a folder of earlier runs whose
    run-to-run variation widens every interval (``harness.verdicts.history``)."""
    from harness.verdicts.history import comparable_history
    from harness.verdicts.repeats_compare import load_side

    (base, base_runs), (new, new_runs) = load_side(base_dir), load_side(new_dir)
    history = comparable_history(history_dir, base, exclude=(new.path,)) if history_dir else []
    runs = None
    if base_runs is not None or new_runs is not None:  # a repeats folder on either side
        runs = (base_runs or [base.summary], new_runs or [new.summary])
    cmp = compare_runs(base, new, threshold_pct, force, history=history, runs=runs, **options)
    cmp.warnings[:0] = [
        f"{role} is a repeats folder of {len(got)} runs: its values are their geometric means, "
        f"every interval rests on the run-to-run variation"
        for role, got in (("BASE", base_runs), ("NEW", new_runs))
        if got is not None
    ]
    return cmp
