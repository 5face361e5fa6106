"""Pure predictions from a spec: what physics allows, before anything runs.

Place in the flow: spec → **plan** → engines → measure → results → verdicts → report.

- ``planner``: the ``Plan`` (per-rank memory, KV capacity, comm, floors, bounds) and ``plan(spec)``.
- ``memory``, ``comm``, ``timing``, ``bounds``: its parts (formulas in docs/formulas.md).
- ``search``: every (tp, pp, dp) for a cluster, ranked.

May import: ``harness.spec``, ``harness.errors``.
"""
