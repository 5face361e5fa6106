"""Run until decided: a sequential stopping rule for the SLO verdicts (``slo.until_decided``).

The arrival process goes on until every SLO target is decided (PASS or FAIL) at a look, or a
budget runs out: the request budget (the trace's requests, ``slo.max_requests``) or the time
budget (``slo.max_seconds`` of the measured phase). Pure: the engines call
:meth:`SequentialRule.should_stop` between arrivals (the reference engine's coordinator, the
external engines' client) and stop issuing new ones once it says so; those in flight are drained.

Looks. Look k judges the first n_k arrivals, once every one of them has ended, never the first n_k
to finish: the fast ones finish first, and a look at them would lean toward PASS. The n_k are fixed
before the run on a geometric schedule, ``first_look``·g^j below the request budget N, then N
itself (the last look: every request).

Error under repeated looks. A verdict read at every look at the full confidence errs far more often
than 1 − c (each look is another chance for a chance excursion past the bound; tests show it). The
rule spends α = 1 − c over the looks: look k judges at confidence 1 − α_k with
α_k = α·n_k / Σ_j n_j, a weighted Bonferroni split. A wrong verdict at the look that ends the run
needs some look to be wrong, so P(wrong) ≤ Σ α_k = α by the union bound, whatever the dependence
between looks (strong here: each look's requests hold the previous look's). Spending in proportion
to n leaves little to the early looks, which can rarely decide a tail target anyway, and most to
the last. Why not a group-sequential boundary (Pocock, O'Brien–Fleming, Lan–DeMets spending): they
are tighter, but they need the joint distribution of one statistic across the looks (a normal
approximation of it); our verdicts are an exact binomial count (percentiles), a BCa bootstrap
(means) and batch means (rates), and the union bound holds for each as it is. Its price: with
doubling looks the last one judges at about 1 − α/2, so a p99 with no request over needs
⌈ln(α/2)/ln 0.99⌉ = 368 requests instead of 299 at c = 0.95.

The end. Decided at look k: the run's verdicts are look k's (the first n_k arrivals; those drained
after it are in the metrics, not in the verdict). A budget ends the run: one final look on every
request that ended, at what is left of α (α_K when the request budget was reached; more when the
time budget cut the looks short). Either way the verdicts of a run are those of one look, and
Σ α_k ≤ α holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from harness.measure.metric_intervals import samples_of
from harness.measure.metrics import RequestRecord, summarize
from harness.measure.slo_verdicts import SloVerdict, all_decided, judge_slo
from harness.spec.slo import SloTarget

FIRST_LOOK = 16  # requests: a mean needs 10 for its bootstrap interval, a p90 29 with none over
GROWTH = 2.0
DECIDED, REQUEST_BUDGET, TIME_BUDGET = "decided", "request budget", "time budget"
RULE = (
    "looks at the first n_k arrivals, n_k geometric (x{g:g} from {first}) up to the request "
    "budget; alpha = 1 - confidence spent in proportion to n_k (weighted Bonferroni: P(any "
    "wrong verdict) <= alpha by the union bound)"
)


def look_schedule(budget: int, first: int = FIRST_LOOK, growth: float = GROWTH) -> list[int]:
    """n_1 < n_2 < … < n_K = budget: ``first``·growth^j while below the budget, then the budget."""
    if budget < 1:
        return []
    looks, n = [], float(first)
    while math.ceil(n) < budget:
        if not looks or math.ceil(n) > looks[-1]:
            looks.append(math.ceil(n))
        n *= growth
    return looks + [budget]


def spending(looks: Sequence[int], alpha: float) -> list[float]:
    """α_k = α·n_k / Σ n_j (they sum to α)."""
    total = float(sum(looks))
    return [alpha * n / total for n in looks]


def ended(r: RequestRecord) -> bool:
    """Completed, or failed (an external engine's error): nothing more will come of it."""
    return r.completed or r.finish_s is not None


def judge_records(
    targets: Sequence[SloTarget],
    records: Sequence[RequestRecord],
    thresholds_ms: Mapping[str, float] | None,
    confidence: float,
) -> list[SloVerdict]:
    """The targets' verdicts on exactly ``records``, as the run's summary judges them."""
    metrics = summarize(list(records), slo_thresholds_ms=thresholds_ms or None)
    samples = samples_of(records, thresholds_ms or None, duration_s=metrics.get("duration_s"))
    return judge_slo(targets, metrics, samples, confidence)


def in_arrival_order(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """The measured (non-warm-up) records by (arrival, request id): the engines' own order."""
    return sorted((r for r in records if not r.warmup), key=lambda r: (r.arrival_s, r.request_id))


@dataclass
class SequentialRule:
    """One run's stopping rule (module docstring). ``budget``: the measured requests of the trace;
    ``max_seconds``: the time budget of the measured phase (None: none)."""

    targets: Sequence[SloTarget]
    thresholds_ms: Mapping[str, float] | None
    confidence: float
    budget: int
    max_seconds: float | None = None
    first_look: int = FIRST_LOOK
    growth: float = GROWTH

    def __post_init__(self) -> None:
        self.alpha = 1.0 - self.confidence
        self.looks = look_schedule(self.budget, self.first_look, self.growth)
        self.alphas = spending(self.looks, self.alpha)
        self.taken: list[dict] = []  # every look taken: n, confidence, verdicts, t_s
        self.stopped: str | None = None  # why arrivals stopped (DECIDED, TIME_BUDGET)
        self._next = 0  # index of the next look
        self._pos = 0  # records scanned (an engine's list, in arrival order)
        self._prefix: list[RequestRecord] = []  # the measured arrivals that ended, in order
        self._final: dict | None = None  # the summary block, once the run has ended

    def should_stop(self, records: Sequence[RequestRecord], now_s: float) -> bool:
        """True once no more requests should arrive: every target decided at a look, or the time
        budget spent. ``records``: the engine's records in arrival order, appended as requests
        arrive (warm-up ones are skipped); cheap unless a look falls due."""
        if self.stopped is not None:
            return True
        if self.max_seconds is not None and now_s >= self.max_seconds:
            self.stopped = TIME_BUDGET
            return True
        while self._pos < len(records):
            r = records[self._pos]
            if not r.warmup:
                if not ended(r):
                    break
                self._prefix.append(r)
            self._pos += 1
        # the last look (the whole budget) is the final one, taken after the run
        while self._next < len(self.looks) - 1 and len(self._prefix) >= self.looks[self._next]:
            k = self._next
            self._next += 1
            verdicts = self._look(k, self._prefix[: self.looks[k]], now_s)
            if all_decided(verdicts):
                self.stopped = DECIDED
                return True
        return False

    def _look(self, k: int, records: Sequence[RequestRecord], now_s: float | None) -> list:
        conf = 1.0 - self.alphas[k] if k < len(self.alphas) else 1.0 - self.left()
        verdicts = judge_records(self.targets, records, self.thresholds_ms, conf)
        self.taken.append(
            {
                "look": k + 1,
                "n": len(records),
                "confidence": conf,
                "t_s": now_s,
                "verdicts": {v.target.text: v.verdict for v in verdicts},
            }
        )
        return verdicts

    def left(self) -> float:
        """α not yet spent by the looks taken."""
        spent = sum(self.alphas[t["look"] - 1] for t in self.taken if t["look"] <= len(self.looks))
        return max(self.alpha - spent, 0.0)

    def summary(self, records: Sequence[RequestRecord], complete: bool = True) -> dict:
        """The summary's ``sequential`` block after the run: the rule, the looks, why it stopped and
        the final look (``final``: n and confidence, which ``final_verdicts`` judges again); the
        final look is taken once."""
        if self._final is not None:
            return self._final
        if self.stopped == DECIDED:
            final = self.taken[-1]
        else:
            done = [r for r in in_arrival_order(records) if ended(r)]
            k = len(self.looks)  # the final look spends what is left
            conf = 1.0 - self.left()
            self._next = k
            final = {"look": len(self.taken) + 1, "n": len(done), "confidence": conf}
            final["verdicts"] = {
                v.target.text: v.verdict
                for v in judge_records(self.targets, done, self.thresholds_ms, conf)
            }
            self.taken.append({**final, "t_s": None})
            if self.stopped is None:
                self.stopped = REQUEST_BUDGET if complete else "run ended before its budget"
        served = sum(1 for r in records if not r.warmup)
        self._final = {
            "rule": RULE.format(g=self.growth, first=self.first_look),
            "confidence": self.confidence,
            "request_budget": self.budget,
            "max_seconds": self.max_seconds,
            "schedule": list(self.looks),
            "alphas": list(self.alphas),
            "looks": list(self.taken),
            "stopped": self.stopped,
            "requests_served": served,
            "final": {"look": final["look"], "n": final["n"], "confidence": final["confidence"]},
        }
        return self._final


def final_verdicts(
    targets: Sequence[SloTarget],
    records: Sequence[RequestRecord],
    thresholds_ms: Mapping[str, float] | None,
    block: Mapping[str, Any],
) -> list[SloVerdict]:
    """The run's verdicts under the rule: its final look (``block["final"]``) judged again on the
    first n arrivals that ended, at that look's confidence, each rule naming the look."""
    final = block["final"]
    done = [r for r in in_arrival_order(records) if ended(r)][: final["n"]]
    looks = len(block.get("schedule") or [])
    note = (
        f"; run until decided: look {final['look']} ({block.get('stopped')}), "
        f"first {final['n']} arrivals, at {final['confidence']:.4g} "
        f"(alpha {1 - block.get('confidence', 0.95):.3g} spent over {looks} scheduled looks)"
    )
    return [
        replace(v, rule=v.rule + note)
        for v in judge_records(targets, done, thresholds_ms, final["confidence"])
    ]
