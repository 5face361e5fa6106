"""Every file and sequence a validated spec names, checked before anything starts: the trace it
serves (generated or replayed, non-empty, each request fitting a KV slot) and the checkpoint's
safetensors headers. ``harness plan`` and ``harness run`` (in the launcher) both call it, so plan
refuses exactly what run refuses."""

from __future__ import annotations

from harness.errors import UsageError
from harness.spec.checkpoint import check_checkpoint
from harness.spec.workload import Trace, build_trace


def check_inputs(spec) -> Trace:
    """The spec's trace, after every input check; a problem is one ``UsageError`` line (exit 2)."""
    max_seq = spec.run.max_seq_len or spec.shape.max_context
    trace = build_trace(spec.workload, spec.shape.vocab, max_seq)
    if not trace.requests:
        raise UsageError(
            f"workload.duration_s: no request of {spec.workload.trace} arrives before "
            f"{spec.workload.duration_s:g} s; raise it or drop it"
        )
    for r in trace.requests:
        if r.input_len + r.output_len - 1 > max_seq:
            raise UsageError(
                f"run.max_seq_len: request {r.request_id} needs {r.input_len + r.output_len - 1} "
                f"cached tokens but a KV slot holds {max_seq}; raise it or shorten the lengths"
            )
    if spec.model.checkpoint:
        check_checkpoint(spec.model.checkpoint, spec.shape)
    return trace
