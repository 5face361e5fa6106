"""Calibrated prediction: fit step costs from a run's tables (or an emulate profile), then serve
the spec's workload through the reference engine's own scheduler and serving loop on a simulated
clock, and judge the result like a run (``harness predict``; docs/performance.md has its error).

Modules, in the order they depend on each other:
  fit.py        StageCost: the linear cost of one stage's micro-batch, least squares, residuals
  calibrate.py  PipelineModel from a run directory or an emulate JSON (hops, coordinator time)
  simulate.py   SimClock, SimStage (the PipelineStage surface), simulate: Scheduler + ServeLoop
  closure.py    one factor on every fitted time so the calibration run's own mean ITL is met
  draws.py      the intervals' draws: the calibration block-bootstrapped and re-closed, one run each
  verdicts.py   SLO verdicts from the intervals (PASS / FAIL / INCONCLUSIVE), or the point's
  forecast.py   forecast(spec, source): summary-shaped metrics with their prediction intervals,
                SLO verdicts, extrapolation flags
  capacity.py   the simulator as the capacity search's probe

Place: after ``harness.emulate`` (it reads emulate JSON) and before ``harness.commands``.
May import: every package below it; it imports the reference engine's scheduler and loop (torch).
"""
