"""Judgements over plans and runs: claims, regressions, history, capacity.

Place in the flow: spec → plan → engines → measure → results → **verdicts** → report.

- ``claims/``: a strategy report's claims (markdown or YAML) → CONFIRMED / REFUTED / UNVERIFIED.
- ``compare``: one run against a baseline, per metric, direction-aware.
- ``history``: key metrics of every run under a folder.
- ``capacity``: the ``--find-capacity`` search (doubling, then bisection) driving a probe function,
  and the one table its probes fill.

May import: ``harness.spec``, ``harness.plan``, ``harness.measure``, ``harness.results``,
``harness.errors``."""
