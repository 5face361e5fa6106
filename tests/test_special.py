"""harness.measure.special without scipy (the GPU machines have none) gives scipy's values: the
special functions to 1e-9, the bootstrap intervals within a few percent of their width (the
resampling draws differ), and every interval of the summary module runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.measure import batch_means, intervals, resample, special

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
sys.modules["scipy"] = None
import numpy as np
from harness.measure import batch_means, intervals, resample, special
assert not special.HAVE_SCIPY
rng = np.random.default_rng(7)
x = rng.lognormal(0.0, 0.8, 200)
groups = [rng.lognormal(0.0, 0.5, k) for k in rng.integers(3, 12, 60)]
CASES = ((100, 0.9), (5000, 0.99), (10**5, 0.5))
out = {
    "betainc": [special.betainc(a, b, x_) for a, b, x_ in ((5, 3, 0.4), (95.5, 4.5, 0.97))],
    "table": list(special.betainc(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), 0.3)),
    "chi2": [special.chi2_ppf(0.025, 2 * 7.5), special.chi2_ppf(0.975, 42.0)],
    "t": [special.t_ppf(0.975, 4), special.t_ppf(0.05, 9)],
    "ranks": [intervals.order_ranks(n, q, 0.025) for n, q in CASES],
    "garwood": batch_means.garwood(12.0, 0.95),
    "mean": resample.mean_interval(x, 0.95).to_dict(),
    "pooled": resample.pooled_mean_interval(groups, 0.95).to_dict(),
}
print(json.dumps(out))
"""


def test_without_scipy_the_intervals_equal_scipys():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    p = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert special.HAVE_SCIPY  # this process: scipy's values
    want_beta = [special.betainc(5, 3, 0.4), special.betainc(95.5, 4.5, 0.97)]
    np.testing.assert_allclose(got["betainc"], want_beta, rtol=1e-9)
    np.testing.assert_allclose(
        got["table"], special.betainc(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), 0.3)
    )
    np.testing.assert_allclose(
        got["chi2"], [special.chi2_ppf(0.025, 15.0), special.chi2_ppf(0.975, 42.0)], rtol=1e-9
    )
    np.testing.assert_allclose(
        got["t"], [special.t_ppf(0.975, 4), special.t_ppf(0.05, 9)], rtol=1e-9
    )
    want_ranks = [
        intervals.order_ranks(n, q, 0.025) for n, q in ((100, 0.9), (5000, 0.99), (10**5, 0.5))
    ]
    assert [tuple(r) for r in got["ranks"]] == want_ranks
    np.testing.assert_allclose(got["garwood"], batch_means.garwood(12.0, 0.95), rtol=1e-9)
    # the bootstrap: the same data, scipy's BCa here, numpy's there
    rng = np.random.default_rng(7)
    x = rng.lognormal(0.0, 0.8, 200)
    groups = [rng.lognormal(0.0, 0.5, k) for k in rng.integers(3, 12, 60)]
    for key, want in (
        ("mean", resample.mean_interval(x, 0.95)),
        ("pooled", resample.pooled_mean_interval(groups, 0.95)),
    ):
        have = got[key]
        width = want.high - want.low
        assert have["method"] == want.method and have["n"] == want.n
        assert abs(have["low"] - want.low) < 0.1 * width, (key, have, want)
        assert abs(have["high"] - want.high) < 0.1 * width, (key, have, want)
