"""Decode steps replayed from CUDA graphs (``run.cuda_graphs``, issue 28 item 3).

A decode step is the same few hundred kernels every time, only the rows change; launched eagerly
from Python, a small step is launch-bound. As vLLM does, the stage captures the decode forward once
per batch-size bucket and replays it: a step of ``b`` rows runs in the graph of the smallest
capture size ``>= b`` (``capture_sizes``: vLLM's default list, 1, 2, 4, then every multiple of 8,
cut at ``max_batch`` and with ``max_batch`` itself), its inputs copied into the graph's static
buffers, the rows past ``b`` padded (``padded_rows``). Prefill and mixed steps run eagerly.

Padding rows must not disturb the cache: each writes its key and value at position
``max_seq_len - 1`` of a slot no real row of the step uses (a position a real sequence only reads
after writing it itself). When every slot is in the step, the slot of the row with the shortest
cache; a step whose rows leave no such position runs eagerly.

What a graph may hold: the index of the step is built inside the capture from the static device
tensors, with host integers fixed at the widest span (every page of a slot), so a replay recomputes
it from the new rows; this holds for the ``paged`` and ``batched`` kernels, whose shapes do not
depend on the rows' lengths (``varlen``'s gather does, ``rows`` is the CPU's): other kernels run
eagerly. On CPU the option does nothing (the engine says so in the run's notes).

The collectives inside a replay are not issued from Python, so the trace cannot time them: each
replay appends the rows the captured step issued (op, group, bytes; no times), so counts and
bytes stay exact.

``capture`` is the capture itself (warm-up on a side stream, one capture, one replay), shared with
``harness emulate``.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

# vLLM's default cudagraph capture sizes: 1, 2, 4 and every multiple of 8 (up to its maximum).
_SMALL = (1, 2, 4)


def capture_sizes(max_batch: int) -> list[int]:
    """The batch sizes with a graph: vLLM's 1, 2, 4, 8, 16, 24, ... up to ``max_batch``, and
    ``max_batch`` itself so that every decode batch has a bucket."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = [s for s in _SMALL if s <= max_batch] + list(range(8, max_batch + 1, 8))
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


def bucket(rows: int, sizes: list[int]) -> int:
    """The smallest capture size that holds ``rows`` rows."""
    for s in sizes:
        if s >= rows:
            return s
    raise ValueError(f"{rows} rows exceed the largest capture size {sizes[-1]}")


def padded_rows(
    slots: list[int], start_pos: list[int], size: int, num_slots: int, max_seq_len: int
) -> tuple[list[int], list[int]] | None:
    """(slots, start_pos) of a decode step padded to ``size`` rows (module docstring), or None
    when no position is safe for the padding rows (the step then runs eagerly)."""
    pad = size - len(slots)
    if pad == 0:
        return list(slots), list(start_pos)
    used = set(slots)
    free = next((s for s in range(num_slots) if s not in used), None)
    last = max_seq_len - 1
    if free is None:
        i = min(range(len(slots)), key=lambda k: start_pos[k])
        if start_pos[i] >= last:
            return None
        free = slots[i]
    return list(slots) + [free] * pad, list(start_pos) + [last] * pad


def graphs_note(asked: bool | None, cuda: bool) -> str | None:
    """The run's note when ``run.cuda_graphs: true`` meets a device without CUDA graphs."""
    if asked and not cuda:
        return (
            "run.cuda_graphs: true does nothing on the CPU (CUDA graphs need a GPU): decode ran "
            "eagerly"
        )
    return None


def capture(step: Callable[[], torch.Tensor], device: torch.device, warmup: int = 2):
    """Warm ``step`` up on a side stream, capture it once, replay once:
    -> (replay: () -> output, capture seconds)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    torch.cuda.synchronize(device)
    return (lambda: (graph.replay(), out)[1]), time.perf_counter() - t0


class _Graph:
    """One bucket: static inputs, the replay, and the comm rows one step issues."""

    def __init__(self, stage, size: int):
        m, dev = stage.model, stage.device
        self.size = size
        long = dict(dtype=torch.long, device=dev)
        # until the first replay's rows arrive, every row is a padding row (capture writes there)
        self.slots = torch.zeros(size, **long)
        self.start = torch.full((size,), m.max_seq_len - 1, **long)
        self.n = torch.ones(size, **long)
        self.x = (
            torch.zeros(size, **long)
            if m.is_first
            else torch.zeros(size, m.shape.hidden, dtype=stage.dtype, device=dev)
        )
        # the widest span: the index's shapes then hold for every step of this size
        host = ([0] * size, [m.max_seq_len - 1] * size, [1] * size)

        def step():
            return m.forward_indexed(self.x, m.index(self.slots, self.start, self.n, host=host))

        rec = stage.comm.rec
        first, level = len(rec.rows), rec.level
        rec.level = "counts"
        step()  # eager, once: the rows a step issues
        self.rows = [list(r) for r in rec.rows[first:]]
        del rec.rows[first:]
        rec.level = "off"
        try:
            self.replay, self.capture_s = capture(step, dev)
        finally:
            rec.level = level


class DecodeGraphs:
    """The decode graphs of one pipeline stage, captured on first use of each bucket."""

    def __init__(self, stage, max_batch: int, num_slots: int):
        self.stage, self.num_slots = stage, num_slots
        self.sizes = capture_sizes(max_batch)
        self.graphs: dict[int, _Graph] = {}
        self.replays = 0

    def applies(self, meta) -> bool:
        return meta.phase == "decode" and self.stage.model.kernel in ("paged", "batched")

    def run(self, meta, rows: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor | None:
        """The step's output from its bucket's graph (first ``b`` rows), or None: run it eagerly."""
        b, model = meta.batch, self.stage.model
        size = bucket(b, self.sizes)
        pad = padded_rows(meta.slots, meta.start_pos, size, self.num_slots, model.max_seq_len)
        if pad is None:
            return None
        g = self.graphs.get(size)
        if g is None:
            g = self.graphs[size] = _Graph(self.stage, size)
        g.slots[:b].copy_(rows[0], non_blocking=True)
        g.start[:b].copy_(rows[1], non_blocking=True)
        g.x[:b].copy_(x, non_blocking=True)
        if size > b:  # the padding rows: host integers, one small upload
            fill = torch.tensor([pad[0][b:], pad[1][b:]], dtype=torch.long)
            fill = fill.pin_memory().to(g.slots.device, non_blocking=True)
            g.slots[b:].copy_(fill[0], non_blocking=True)
            g.start[b:].copy_(fill[1], non_blocking=True)
        out = g.replay()[:b].clone()  # the static output is the next replay's: a copy travels on
        self._trace(g)
        self.replays += 1
        return out

    def _trace(self, g: _Graph) -> None:
        rec = self.stage.comm.rec
        if rec.level == "off":
            return
        for r in g.rows:
            rec.rows.append([r[0], rec.step, rec.phase, *r[3:10], None, None])
