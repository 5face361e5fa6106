"""The run directory: what a run leaves on disk, and how it is read back.

Place in the flow: spec → plan → engines → measure → **results** → verdicts → report.
(Engines write through it, so it sits below them in the import order.)

- ``schema``: table schemas (parquet), file names, verdict names.
- ``summary``: ``summary.json``'s skeleton and the final summary of an engine's result.
- ``writer``: ``RunWriter`` (atomic, serialised writes; ``complete: true`` only at the end).
- ``reader``: ``load_run``/``read_summary``, type-checked; ``atomic``: atomic file writes.
- ``environment``: versions, devices, git sha.
- ``bench_file``: a run as ``vllm bench serve --save-result`` writes it; ``bench_import``: such a
  file read back as request records (``harness import-bench``).

May import: ``harness.spec``, ``harness.plan``, ``harness.measure``, ``harness.errors``.
"""
