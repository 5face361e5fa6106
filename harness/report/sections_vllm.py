"""What the report says of vLLM's own trace (``summary.vllm_trace``): where the profiled window
ran, its size and its cost, the backends it saw and the ops it could not name."""

from __future__ import annotations

from harness.report.doc import Text
from harness.report.rows import fmt


def trace_lines(summary: dict) -> list[Text]:
    """Lines for the communication and pipeline sections; none for a run without the block."""
    vt = summary.get("vllm_trace")
    if not isinstance(vt, dict):
        return []
    w = vt.get("window") or {}
    if not vt.get("files"):
        why = w.get("error") or "no trace was collected"
        return [Text(f"vLLM trace: not traced ({why}).", "note")]
    steps = vt.get("steps") or {}
    phases = vt.get("step_phases") or {}  # the steps table's rows (runs before it: absent)
    kinds = ", ".join(f"{n} {p}" for p, n in phases.items())
    lines = [
        Text(
            f"From vLLM's own torch profiler ({vt.get('level')} level): a profiled window of "
            f"{w.get('requests')} requests ({w.get('prompt_tokens')} prompt and "
            f"{w.get('output_tokens')} output tokens), {vt.get('where')}. "
            f"{len(vt.get('files') or [])} worker traces, "
            f"{fmt(max(steps.values()) if steps else None)} non-empty steps per worker "
            + (f"({kinds}; " if kinds else "(")
            + f"backends: {', '.join(vt.get('backends') or []) or 'none seen'})."
        ),
        Text(
            f"Cost of the window: its requests took {fmt(w.get('serve_s'))} s, and "
            f"/stop_profile blocked the engine {fmt(w.get('stop_s'))} s while the traces were "
            "written; both before the measured window's first request.",
            "note",
        ),
    ]
    unknown = vt.get("unknown_ops") or {}
    if unknown:
        lines.append(
            Text(
                "Communication-looking ops of no known backend (counted, not parsed): "
                + ", ".join(f"{k} ×{v}" for k, v in unknown.items()),
                "note",
            )
        )
    return lines
