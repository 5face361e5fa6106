"""The typed spec and everything it names: validated once, at the start of the flow.

Place in the flow: **spec** → plan → engines → measure → results → verdicts → report.

- ``spec``: the YAML spec as a typed tree (``load_spec``, ``--set`` overrides), validated once.
- ``catalog``: model presets, HF ``config.json`` reading, the GPU catalogue.
- ``layout``: the rank grid (TP innermost), the pipeline layer split.
- ``workload``: arrivals, lengths, prompts, JSONL traces.
- ``slo``: SLO targets and presets, judging measured values against them.

May import: ``harness.errors`` only.
"""
