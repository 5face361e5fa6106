"""The whole deployment projected from measured stage times.

``project`` feeds the measured stage times (interpolated; a stage type that was not measured is
scaled from a measured one by the planner's floor ratio) plus the planner's communication time
into the planner's own workload bounds, so the projection and the analytic floors are computed
by one formula and differ only in where the compute time comes from."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.emulate.records import RankResult
from harness.emulate.sweep import stage_kind
from harness.plan import planner
from harness.spec.catalog import GpuSpec

# The projection's headline rows, as every renderer shows them: (key, label, scale, format).
PROJECTION_ROWS = (
    ("tpot_floor_s", "TPOT, 1 row (ms)", 1e3, ".2f"),
    ("tpot_at_rows_s", "TPOT, full micro-batch (ms)", 1e3, ".2f"),
    ("ttft_floor_s", "TTFT, mean prompt (ms)", 1e3, ".1f"),
    ("rps_bound", "max RPS", 1.0, ".2f"),
    ("rps_slo", "max RPS within the SLOs", 1.0, ".2f"),
)


def _interp(xs: list[float], ys: list[float], x: float, single: str) -> float:
    """Piecewise linear through (xs, ys), extended linearly past the ends; one point: constant
    (``single="const"``) or proportional to x (``"prop"``). Never below a tenth of the smallest
    y."""
    pts = sorted(zip(xs, ys))
    if len(pts) == 1:
        y = pts[0][1] * (x / pts[0][0] if single == "prop" else 1.0)
    else:
        i = next((k for k in range(1, len(pts) - 1) if x <= pts[k][0]), len(pts) - 1)
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return max(y, 0.1 * min(ys))


def measured_compute(res: RankResult, rows: float, tokens: float, context: float) -> float | None:
    """Seconds of ``res``'s stage for rows x tokens after ``context``, from its measured points:
    decode (tokens == 1) bilinear in (batch, context); prefill (batch 1) linear in tokens, x
    rows."""
    if tokens <= 1:
        good = [p for p in res.decode if p.step_s]
        ctxs = sorted({p.context for p in good})
        if not ctxs:
            return None
        at_c = [
            _interp(
                [p.batch for p in good if p.context == c],
                [p.step_s for p in good if p.context == c],
                rows,
                "const",
            )
            for c in ctxs
        ]
        return _interp(ctxs, at_c, context, "const")
    good = [p for p in res.prefill if p.step_s]
    if not good:
        return None
    return rows * _interp([p.tokens for p in good], [p.step_s for p in good], tokens, "prop")


@dataclass(frozen=True)
class MeasuredTiming(planner.Timing):
    """The planner's ``Timing`` with compute taken from measured stages; communication stays the
    planner's link model. A stage with no measurement of its own uses the measured stage of its
    kind (else the nearest measured stage) times the planner's floor ratio between the two;
    ``gpu_ratio`` (when set) scales every point from the local device to the spec's GPU."""

    measured: dict = field(default_factory=dict)  # stage -> RankResult
    local_gpu: GpuSpec | None = None  # set: scale by floor(spec gpu) / floor(local gpu)

    def source(self, s: int) -> int:
        kinds = {r.stage: r.kind for r in self.measured.values()}
        if s in self.measured:
            return s
        same = [k for k, kind in kinds.items() if kind == stage_kind(self.layout, s)]
        return min(same or list(kinds), key=lambda k: abs(k - s))

    def compute(self, s: int, rows: int, tokens: int, context: float) -> float:
        ref = self.source(s)
        t = measured_compute(self.measured[ref], rows, tokens, context)
        if t is None:
            return float("nan")
        if ref != s:
            t *= super().compute(s, rows, tokens, context) / super().compute(
                ref, rows, tokens, context
            )
        if self.local_gpu is not None:
            local = planner.Timing(
                self.shape,
                self.layout,
                self.local_gpu,
                self.dtype_bytes,
                self.max_batch,
                self.links,
            )
            t *= super().compute(s, rows, tokens, context) / local.compute(s, rows, tokens, context)
        return t


def _bounds_dict(b: planner.Bounds, label: str, basis: str) -> dict:
    keys = (
        "tpot_floor_s",
        "tpot_at_rows_s",
        "ttft_floor_s",
        "e2e_floor_s",
        "rps_bound",
        "rps_slo",
        "decode_rows",
        "slo_rows",
        "decode_context",
        "micro_batches",
        "offered_rps",
    )
    d = {k: getattr(b, k) for k in keys}
    d.update(
        label=label, basis=basis, decode_step_s=list(b.decode_step_s), problems=list(b.problems)
    )
    return d


def project(spec, results: list[RankResult], device_label: str, local_gpu: GpuSpec | None) -> dict:
    """Projected TPOT/TTFT/max RPS of the whole deployment (label "projection") beside the
    planner's analytic floors, both from ``planner.workload_bounds`` on the spec's workload and
    SLOs. Scaled to the spec's GPU by the per-point floor ratio when the local device is another
    GPU."""
    pl = planner.plan(spec)
    base = planner.Timing(
        spec.shape,
        spec.layout,
        spec.gpu,
        spec.dtype_bytes,
        spec.run.max_batch,
        planner.links(spec.layout, spec.gpu, spec.cluster.gpus_per_node),
    )
    scale = (
        local_gpu is not None
        and "cpu" not in (local_gpu.name, spec.gpu.name)
        and local_gpu.name != spec.gpu.name
    )
    tm = MeasuredTiming(
        *[
            getattr(base, f)
            for f in ("shape", "layout", "gpu", "dtype_bytes", "max_batch", "links")
        ],
        measured={r.stage: r for r in results},
        local_gpu=local_gpu if scale else None,
    )
    capacity = min(st.kv_token_capacity for st in pl.stages)
    wl = planner.workload_shape(spec.workload)
    proj = planner.workload_bounds(
        tm,
        wl,
        capacity,
        spec.micro_batches,
        spec.slo_targets,
        chunk=planner.prefill_chunk_tokens(spec),
    )
    sources = {s: tm.source(s) for s in range(spec.layout.pp)}
    basis = (
        f"stage compute measured on {device_label}"
        + (f", scaled to {spec.gpu.name} by the planner's floor ratio per point" if scale else "")
        + "; communication from the planner's link model; queueing ignored"
    )
    out = {
        "projection": _bounds_dict(proj, "projection", basis),
        "analytic": _bounds_dict(
            pl.bounds, "analytic floor", f"planner roofline on {spec.gpu.name}"
        ),
        "stage_sources": {
            str(s): ("measured" if s == r else f"scaled from stage {r}") for s, r in sources.items()
        },
    }
    comparable = local_gpu is not None and (scale or local_gpu.name == spec.gpu.name)
    out["planner_errors"] = planner_errors(out["analytic"], out["projection"]) if comparable else []
    return out


# lower bounds on times
FLOOR_KEYS = ("tpot_floor_s", "tpot_at_rows_s", "ttft_floor_s", "e2e_floor_s")


def planner_errors(analytic: dict, projection: dict, tol: float = 1e-3) -> list[str]:
    """A floor must never exceed a measurement of the same thing, nor an upper bound (``rps_bound``)
    fall below one: each case where the planner's analytic value contradicts the projection from
    measured stages (same formula, same workload; differing only in where compute time comes
    from)."""
    errors = []
    for key, label, scale, fmt in PROJECTION_ROWS:
        a, p = analytic.get(key), projection.get(key)
        if a is None or p is None or a != a or p != p:
            continue
        if key in FLOOR_KEYS and a > p * (1 + tol):
            errors.append(
                f"planner error: analytic floor {label} {a * scale:{fmt}} is above the measured "
                f"projection {p * scale:{fmt}}"
            )
        elif key == "rps_bound" and a < p * (1 - tol):
            errors.append(
                f"planner error: analytic bound {label} {a * scale:{fmt}} is below the measured "
                f"projection {p * scale:{fmt}}"
            )
    return errors
