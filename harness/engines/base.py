"""The seam between ``harness run`` and the system under test.

``harness run`` validates the spec, builds the trace, opens the run writer, and calls
``Engine.serve(spec, trace, writer)``. The engine serves the trace and hands back an
:class:`EngineResult`: the common request records (the same ``RequestRecord`` whatever ran the
model), the telemetry and engine tables it produced, and the summary parts only it can state
(hardware, layout, measured claim values, its own checks). Everything downstream — metrics, SLO
verdicts, the summary, report, compare, ``verify-claims --results`` — is computed from that result
by :func:`harness.results.summary.final_summary` and reads only the common records and tables; a
table an engine does not produce is absent from the run directory, and readers say so.

An engine may stop early (signal, timeout, a failed worker): it may then write a partial summary
through the writer itself and return (or raise) with ``complete=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.measure.metrics import RequestRecord


@dataclass
class EngineResult:
    """What a system under test hands back after serving a trace.

    ``records``: every request served, scheduled arrival and every token time (warm-up ones flagged
    ``warmup``: they are reported apart and never enter the main statistics).
    ``tokens``: request_id → generated token ids (``run.record_tokens``), else None.
    ``tables``: name → rows, only the tables this engine produced
    (``harness.results.schema.TABLES``).
    ``measured``: claim id → value, what this engine can measure (``harness.verdicts.claims``).
    ``extra``: further summary keys of this engine (its stage statistics, checks, notes).
    """

    records: list[RequestRecord]
    complete: bool
    incomplete_reason: str | None = None
    tokens: dict[int, list[int]] | None = None
    wall_s: float | None = None
    warmup_s: float | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    layout: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)


class Engine(Protocol):
    """A system under test. ``kind`` is the spec's ``engine.kind``."""

    kind: str

    def serve(self, spec: Any, trace: Any, writer: Any | None) -> EngineResult:
        """Serve ``trace`` under ``spec``'s layout. ``writer`` (a ``RunWriter``) is given to the one
        process that reports; an engine of several processes gets None in the others."""
        ...

    def close(self, failed: bool) -> None:
        """Release everything the engine started (process groups, servers); called after the
        result is written, and with ``failed=True`` when ``serve`` or the writing raised."""
        ...
