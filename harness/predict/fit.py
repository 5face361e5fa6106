"""The step-cost model: one linear cost per pipeline stage, fitted by least squares (pure, numpy).

A stage's service time for one micro-batch is

    cost_s = c0 + c_tok · tokens + c_row · rows + c_attn · attn_pairs + c_depth · depth   (seconds)

tokens = Σ rows' new tokens (the matmuls), rows = rows in the micro-batch (the lm_head, sampling,
per-row overheads), attn_pairs = Σ_rows n·start + n(n+1)/2 (causal attention's (query, key)
pairs; the context length enters here), depth = micro-batches in the pipeline once this one
entered (itself included): on a host whose stages share cores (the CPU twin: 8 ranks, 2 cores) a
stage is slower the more stages are busy; with a device per stage c_depth fits to ~0. The stage's
own TP collectives and its receive of the activations (the PP hop) are part of its cost; the
tokens' way back to the coordinator is fitted apart (``harness.predict.calibrate``).

Fit (``fit_stage``): ordinary least squares on the samples, then two guards a linear cost needs:
- robustness: points whose residual exceeds ``OUTLIER_MADS`` median absolute deviations (a loaded
  host's scheduler stalls) are dropped once and the fit repeated; the count is reported;
- non-negativity: a coefficient that comes out negative (features nearly collinear, e.g. decode
  steps where tokens == rows) is removed and the rest refitted, until none is negative.
A feature that does not vary in the samples cannot be fitted and stays at 0 (``unfitted``).

Every sample's residual (``spread_s``, the dropped outliers too: a stall recurs) travels with the
fit: the simulator adds one, drawn at random, to each simulated step, so the forecast sees the
measured step-to-step spread (on a shared host it is what makes micro-batches queue behind each
other), not only the mean.

Residuals (``Residuals``): n, RMSE, mean |residual| / mean y, max |residual|, R²
(1 − SS_res / SS_tot; 1 when SS_tot = 0 and the fit is exact).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FEATURES = ("tokens", "rows", "attn_pairs", "depth")
OUTLIER_MADS = 6.0


@dataclass
class Residuals:
    n: int
    dropped: int
    rmse_s: float
    rel_mae: float
    max_abs_s: float
    r2: float


@dataclass
class StageCost:
    stage: int
    intercept_s: float
    coef: dict[str, float]  # seconds per unit of each feature
    residuals: Residuals | None = None
    # measured min, max per feature
    range: dict[str, tuple[float, float]] = field(default_factory=dict)
    unfitted: list[str] = field(default_factory=list)
    source: str = "measured"
    # the kept residuals: the simulator draws from them
    spread_s: list[float] = field(default_factory=list)

    def draw(self, rng) -> float:
        """One residual drawn from the fit's own (``spread_s``; 0 when there are none)."""
        return float(self.spread_s[rng.integers(len(self.spread_s))]) if self.spread_s else 0.0

    def cost(self, feats: dict[str, float], noise: float = 0.0) -> float:
        return max(
            0.0, self.intercept_s + sum(self.coef.get(k, 0.0) * feats[k] for k in FEATURES) + noise
        )

    def outside(self, feats: dict[str, float]) -> list[str]:
        """Features of ``feats`` outside the measured range (an extrapolation)."""
        out = []
        for k in FEATURES:
            lo, hi = self.range.get(k, (feats[k], feats[k]))
            if feats[k] > hi * (1 + 1e-9) or feats[k] < lo * (1 - 1e-9):
                out.append(k)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spread_s"] = len(self.spread_s)  # how many residuals the simulator draws from
        d["range"] = {k: list(v) for k, v in self.range.items()}
        return d


def _lstsq(x: np.ndarray, y: np.ndarray, cols: list[int]) -> np.ndarray:
    beta = np.zeros(x.shape[1])
    if cols:
        sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        beta[cols] = sol
    return beta


def _nonneg(x: np.ndarray, y: np.ndarray, cols: list[int]) -> np.ndarray:
    """Least squares over ``cols``; drop the most negative non-intercept coefficient until none is <
    0."""
    cols = list(cols)
    while True:
        beta = _lstsq(x, y, cols)
        neg = [c for c in cols if c > 0 and beta[c] < 0]
        if not neg:
            return beta
        cols.remove(min(neg, key=lambda c: beta[c]))


def fit_stage(
    stage: int, samples: list[tuple[dict[str, float], float]], source: str = "measured"
) -> StageCost:
    """Fit ``cost_s`` to ``samples`` [(features, seconds), ...] (module docstring)."""
    if not samples:
        raise ValueError(f"stage {stage}: no samples to fit")
    x = np.array([[1.0] + [float(f[k]) for k in FEATURES] for f, _ in samples])
    y = np.array([float(t) for _, t in samples])
    varying = [j for j in range(1, x.shape[1]) if np.ptp(x[:, j]) > 0]
    cols = [0] + varying
    beta = _nonneg(x, y, cols)
    res = y - x @ beta
    mad = float(np.median(np.abs(res - np.median(res))))
    keep = np.abs(res - np.median(res)) <= OUTLIER_MADS * mad + 1e-9  # 1 ns: an exact fit keeps all
    if keep.sum() >= len(cols) and keep.sum() < len(y):
        beta = _nonneg(x[keep], y[keep], cols)
    else:
        keep = np.ones(len(y), bool)
    xk, yk = x[keep], y[keep]
    rk = yk - xk @ beta
    ss_tot = float(((yk - yk.mean()) ** 2).sum())
    ss_res = float((rk**2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-18 else 0.0)
    resid = Residuals(
        n=int(len(y)),
        dropped=int(len(y) - keep.sum()),
        rmse_s=float(np.sqrt(ss_res / len(yk))),
        rel_mae=float(np.abs(rk).mean() / max(abs(yk.mean()), 1e-12)),
        max_abs_s=float(np.abs(rk).max()),
        r2=r2,
    )
    rng = {k: (float(x[:, j + 1].min()), float(x[:, j + 1].max())) for j, k in enumerate(FEATURES)}
    return StageCost(
        stage=stage,
        intercept_s=float(beta[0]),
        coef={k: float(beta[j + 1]) for j, k in enumerate(FEATURES)},
        residuals=resid,
        range=rng,
        unfitted=[k for j, k in enumerate(FEATURES) if j + 1 not in varying],
        source=source,
        spread_s=[float(v) for v in y - x @ beta],
    )
