"""Measurement instruments: each one records, none of them prints.

Place in the flow: spec → plan → engines → **measure** → results → verdicts → report.
Engines use these instruments and record types, so it sits below them in the import order.

- ``metrics``: request records → vLLM ``bench serve``-style serving metrics (pure); ``peaks``:
  vLLM's per-second peak output tokens and concurrency.
- ``comm_stats``: nccl-tests algbw/busbw per op and per (group, op) (pure).
- ``stages``: stage busy/idle, bubble, imbalance from stage timings (pure).
- ``nvml`` (+ ``nvml_fields``, ``nvml_summary``): the GPU sampler and its CPU twin.

May import: ``harness.spec``, ``harness.errors``.
"""
