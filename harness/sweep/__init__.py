"""``harness sweep``: every candidate layout predicted, the promising ones run at a ladder of loads,
the best under the SLOs named with its evidence and each forecast's error beside the measurement.

Modules, in the order they depend on each other:
  candidates.py  layout names, ``--layouts`` (auto: every tp·pp·dp the planner accepts)
  ladder.py      ``--loads`` along the spec's load axis; the knee that ends ``auto``
  pareto.py      measured points (tokens/s per GPU and per user, intervals), front, best, advantage
  predicted.py   planner row, per-layout calibration and the simulated ladder, forecast error
  state.py       the sweep folder, ``sweep.json`` (atomic), resume
  driver.py      rank first, run second (a runner supplies the runs)

Place: after ``harness.predict`` and before ``harness.commands``.
May import: every package below it (the planner, results, verdicts, predict); the report renders
its sweep.json without importing it.
"""
