"""Error rate of run-until-decided's stopping rule under repeated looks (issue 25 item 3).

Synthetic runs whose true p90 latency sits exactly at the target's limit (the worst case): 10 % of
requests over it ("met": a FAIL is wrong) or 10.01 % ("missed": a PASS is wrong). Each run is fed to
``harness.measure.sequential.SequentialRule`` one arrival at a time up to a budget of 512 requests
(looks at 16, 32, ..., 512); the same looks read at the full confidence ("naive": stop at the first
PASS or FAIL) beside it. Prints the share of wrong verdicts of each, with a 95 % Wilson interval.

    .venv/bin/python benchmarks/sequential_error.py --runs 2000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.measure.sequential import SequentialRule  # noqa: E402
from test_sequential import P90, _naive, _records, _sequential  # noqa: E402


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--confidence", type=float, default=0.95)
    a = ap.parse_args()
    for truth, share, bad in (("met", 0.10, "FAIL"), ("missed", 0.1001, "PASS")):
        rng = np.random.default_rng(2512 if truth == "met" else 2513)
        wrong = naive = 0
        for _ in range(a.runs):
            recs = _records(np.where(rng.random(a.budget) < share, 2.0, 0.5))
            rule = SequentialRule(P90, None, a.confidence, a.budget)
            wrong += _sequential(recs, rule) == bad
            naive += _naive(recs, a.confidence) == bad
        for name, k in (("rule", wrong), ("naive", naive)):
            lo, hi = wilson(k, a.runs)
            print(
                f"target {truth}: {name:5s} wrong {bad} {k}/{a.runs} = {k / a.runs:.2%} "
                f"(95 % interval {lo:.2%} .. {hi:.2%})"
            )


if __name__ == "__main__":
    main()
