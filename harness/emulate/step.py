"""One step of a rank's forward: eager (the run's own path) or captured once in a CUDA graph.

``StaticStep`` runs ``StageModel.forward_indexed`` on inputs and a ``BatchIndex`` fixed in
advance, so the step has no host sync and a graph can capture it; ``same_output`` is the check
of that step against ``StageModel.forward``."""

from __future__ import annotations

import torch

from harness.emulate.timing import WARMUP
from harness.engines.reference.comm import Comm
from harness.engines.reference.model.llama import StageModel
from harness.engines.reference.parallel.graphs import capture
from harness.engines.reference.parallel.tp import greedy_sample


class StaticStep:
    """``StageModel.forward`` (+ greedy sampling on the last stage) over fixed inputs, with the
    ``BatchIndex`` built once here: building it syncs the host (the rows as ints), which a CUDA
    graph cannot capture. ``x`` is packed (``[N]`` ids or ``[N, hidden]``). ``forward_indexed`` is
    the same modules and kernels, so the output equals ``forward``'s; ``pre`` keeps the tensor
    before sampling (hidden, or the last stage's logits) for that check."""

    def __init__(self, model: StageModel, comm: Comm, x, slots, start_pos, n_tokens):
        self.model, self.comm, self.x, self.n_tokens = model, comm, x, n_tokens
        self.batch = model.index(slots, start_pos, n_tokens)
        self.pre: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        self.pre = self.model.forward_indexed(self.x, self.batch)
        if not self.model.is_last:
            return self.pre
        self.comm.rec.phase = "sample"
        return greedy_sample(self.pre, self.comm)


@torch.no_grad()
def eager_forward(model: StageModel, comm: Comm, x, slots, start, n) -> torch.Tensor:
    """``StageModel.forward`` (+ greedy sampling on the last stage), as a run's step does it."""
    out = model(x, slots, start, n)
    if model.is_last:
        comm.rec.phase = "sample"
        out = greedy_sample(out, comm)
    return out


def capture_graph(step: StaticStep, device: torch.device):
    """Warm up on a side stream, capture one step, replay once; -> (replay, capture seconds).
    The same capture as a run's decode graphs (engines/reference/parallel/graphs.py)."""
    return capture(step, device, WARMUP)


def capture_or_eager(step: StaticStep, device: torch.device, eager):
    """The step captured in a CUDA graph, or, when capture fails for any reason, the eager step:
    -> (run, mode, capture seconds or None, note). Capture raises more than RuntimeError (an
    ``AssertionError`` from the allocator's graph pool, a ``TypeError`` from a kernel's Python
    wrapper, ``torch.AcceleratorError``...): any of them degrades the point, none ends the sweep."""
    try:
        run, capture_s = capture_graph(step, device)
        return run, "cuda_graph", capture_s, ""
    except Exception as e:  # degrade: time the eager step, say why
        first = str(e).splitlines()[0][:160] if str(e) else ""
        return (
            eager,
            "eager",
            None,
            f"graph capture failed, timed eagerly: {type(e).__name__}: {first}",
        )


def same_output(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> str:
    """ "ok (exact)", "ok (rel ...)" within the dtype's rounding (‖a − b‖/‖b‖ <= 1e-2 for 16-bit
    types, 1e-5 for fp32: kernels may pick other algorithms inside a graph), else "mismatch"."""
    if torch.equal(a, b):
        return "ok (exact)"
    rel = ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    return f"ok (rel {rel:.1e})" if rel <= tol else f"mismatch (rel {rel:.1e})"
