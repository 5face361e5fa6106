"""The few special functions the intervals need, from scipy where it is installed and from mpmath
where it is not.

Why two sources: every run's summary carries intervals, and the summary is written on rank 0 of
the GPU node. The GPU machines this project is checked on have torch, transformers, numpy and
pandas but no scipy (and no network to install it); torch depends on sympy, which depends on
mpmath, so mpmath is there wherever torch is. scipy is vectorised and fast; mpmath is pure Python
and slower (about 0.1 ms a value), which only the binomial table of a percentile interval feels.
``tests/test_special.py`` checks both against each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # the fast path
    from scipy import special as _sp
    from scipy import stats as _st
except ImportError:  # pragma: no cover - exercised by tests/test_special.py with scipy hidden
    _sp = _st = None

HAVE_SCIPY = _sp is not None


def _mp():
    import mpmath

    return mpmath


def betainc(a: Any, b: Any, x: Any) -> Any:
    """The regularized incomplete beta function I_x(a, b); arrays broadcast (as scipy's)."""
    if HAVE_SCIPY:
        return _sp.betainc(a, b, x)
    mp = _mp()
    one = lambda a_, b_, x_: float(mp.betainc(a_, b_, 0, x_, regularized=True))  # noqa: E731
    if np.ndim(a) == np.ndim(b) == np.ndim(x) == 0:
        return one(float(a), float(b), float(x))
    av, bv, xv = np.broadcast_arrays(
        np.asarray(a, float), np.asarray(b, float), np.asarray(x, float)
    )
    return np.vectorize(one, otypes=[float])(av, bv, xv)


def binom_cdf_table(n: int, q: float) -> np.ndarray:
    """P(Binomial(n, q) ≤ j) for j = 0 … n. Without scipy from the probabilities themselves (log
    of the binomial coefficient by lgamma, then a running sum): n lgamma calls instead of n
    incomplete beta functions in mpmath (5000 requests: milliseconds instead of seconds)."""
    j = np.arange(n + 1, dtype=float)
    out = np.ones(n + 1)
    inner = j < n
    if HAVE_SCIPY:
        out[inner] = _sp.betainc(n - j[inner], j[inner] + 1.0, 1.0 - q)
        return out
    if q <= 0.0 or q >= 1.0:
        return (j >= (0 if q <= 0.0 else n)).astype(float)
    import math

    lg = np.vectorize(math.lgamma, otypes=[float])
    log_pmf = (
        lg(n + 1.0) - lg(j + 1.0) - lg(n - j + 1.0) + j * math.log(q) + (n - j) * math.log1p(-q)
    )
    out[inner] = np.minimum(np.cumsum(np.exp(log_pmf))[inner], 1.0)
    return out


def chi2_ppf(q: float, dof: float) -> float:
    """The q-quantile of the χ² distribution with ``dof`` degrees of freedom."""
    if HAVE_SCIPY:
        return float(_st.chi2.ppf(q, dof))
    mp = _mp()
    k = mp.mpf(dof) / 2
    # P(χ² ≤ x) = P(k, x/2), the regularized lower incomplete gamma; increasing in x
    cdf = lambda x: mp.gammainc(k, 0, x / 2, regularized=True)  # noqa: E731
    return _invert(cdf, q, mp)


def t_ppf(q: float, dof: float) -> float:
    """The q-quantile of Student's t with ``dof`` degrees of freedom."""
    if HAVE_SCIPY:
        return float(_st.t.ppf(q, dof))
    mp = _mp()
    if q == 0.5:
        return 0.0
    v = mp.mpf(dof)

    def cdf(t):  # P(T ≤ t) through the incomplete beta, for t ≥ 0
        return 1 - mp.betainc(v / 2, mp.mpf(1) / 2, 0, v / (v + t * t), regularized=True) / 2

    upper = _invert(cdf, max(q, 1 - q), mp)
    return upper if q > 0.5 else -upper


def _invert(cdf, q: float, mp) -> float:
    """x ≥ 0 with cdf(x) = q, by bisection on a bracket grown until it holds q (monotone cdf)."""
    lo, hi = mp.mpf(0), mp.mpf(1)
    while cdf(hi) < q:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if cdf(mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= mp.mpf(1e-13) * max(mp.mpf(1), hi):
            break
    return float((lo + hi) / 2)


def norm_ppf(q: Any) -> Any:
    """The standard normal quantile (stdlib; arrays elementwise)."""
    from statistics import NormalDist

    nd = NormalDist()
    if np.ndim(q) == 0:
        return nd.inv_cdf(float(q))
    return np.vectorize(nd.inv_cdf, otypes=[float])(np.asarray(q, float))


def norm_cdf(x: Any) -> Any:
    from statistics import NormalDist

    nd = NormalDist()
    if np.ndim(x) == 0:
        return nd.cdf(float(x))
    return np.vectorize(nd.cdf, otypes=[float])(np.asarray(x, float))
