"""One vLLM worker's trace → its engine steps and communication ops (pure; no torch).

Steps: each engine step is a range named ``execute_context_N(a)_generation_M(b)`` (N requests
with a prompt tokens, M with b generated tokens); with PP the engine also runs empty steps
(``execute_context_0(0)_generation_0(0)``), kept apart. A communication op is one event of
``vllm_trace_names`` carrying shapes, paired with the backend's event carrying its time: the
k-th ``shape`` event of a family with the k-th ``time`` event of that family on the rank, when
both are equally many and in order (else every op of the family keeps its own span). An op
nested inside another of the same family on the same thread is the same op (kept once, the
outer one). Times are the backend event's (the collective itself); an op without a paired
backend event keeps its own span (``paired: False``); each ``both`` event is its own time.

An op belongs to the step whose range contains it; one outside every range goes to the next
step for a receive (vLLM receives a step's input before the step's range opens) and to the
previous one for a send (sent after the range closed).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness.measure.vllm_trace_names import DTYPES, PARAM_DTYPES, CommName, is_unknown_comm, lookup
from harness.measure.vllm_trace_read import Worker, iter_events

STEP_RANGE = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)$")


@dataclass(frozen=True)
class Step:
    start_us: float
    end_us: float
    prefill_rows: int
    prefill_tokens: int
    decode_rows: int
    decode_tokens: int

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """What the step ran, without its times: the same on every worker that ran it."""
        return (self.prefill_rows, self.prefill_tokens, self.decode_rows, self.decode_tokens)

    @property
    def phase(self) -> str:
        if self.prefill_rows and self.decode_rows:
            return "mixed"
        return "prefill" if self.prefill_rows else "decode"


@dataclass
class Tensor:
    dtype: str | None
    numel: int
    itemsize: int | None
    shape: tuple
    guessed: bool = False  # dtype not in the trace: the model's (a tensor list's type is unnamed)

    @property
    def bytes(self) -> int | None:
        return None if self.itemsize is None else self.numel * self.itemsize


@dataclass
class Op:
    """One communication op of one rank: what it moved, when, in which step."""

    name: str
    entry: CommName
    tid: object
    start_us: float
    end_us: float
    tensors: list[Tensor] = field(default_factory=list)
    paired: bool = False
    step: int | None = None  # index into RankTrace.steps (non-empty steps only)


@dataclass
class RankTrace:
    worker: Worker
    steps: list[Step]  # non-empty steps, in time order
    empty_steps: int
    ops: list[Op]
    unknown: Counter
    unpaired_time: Counter  # backend events with no shape event to pair (family -> count)


def _tensors(dims, types, entry: CommName, default_dtype: str | None) -> list[Tensor]:
    """The local tensors of the op's input ``entry.arg`` (a list: one per element)."""
    if not isinstance(dims, list) or entry.arg >= len(dims):
        return []
    d = dims[entry.arg]
    t = types[entry.arg] if isinstance(types, list) and entry.arg < len(types) else None
    shapes = d if d and all(isinstance(x, list) for x in d) else [d]
    out = []
    for shape in shapes:
        if not isinstance(shape, list) or not shape:
            continue
        n = 1
        for s in shape:
            n *= int(s)
        name, size = DTYPES.get(t, (None, None)) if isinstance(t, str) else (None, None)
        guessed = name is None and default_dtype in {v[0] for v in DTYPES.values()}
        if guessed:
            name, size = next(v for v in DTYPES.values() if v[0] == default_dtype)
        out.append(Tensor(name, n, size, tuple(int(s) for s in shape), guessed))
    if entry.backend == "shm" and entry.op == "send" and out and t == "TensorList":
        # vllm cpu_communicator.send_tensor_dict: the list ends with the pickled keys and sizes
        out[-1] = Tensor("uint8", out[-1].numel, 1, out[-1].shape)
    return out


def _param_comms(ops: list[Op], params: list[dict]) -> None:
    """Fill a tensor's dtype the shapes did not give (a tensor list's "TensorList" type) from the
    ``record_param_comms`` event inside the op (torch's c10d records dtype and elements there)."""
    by_tid: dict = defaultdict(list)
    for p in params:
        by_tid[p["tid"]].append(p)
    for o in ops:
        if all(t.dtype is not None and not t.guessed for t in o.tensors) and o.tensors:
            continue
        for p in by_tid.get(o.tid, ()):
            if o.start_us - 1e-3 <= p["ts"] <= o.end_us + 1e-3:
                name, size = PARAM_DTYPES.get(str(p.get("dtype")), (None, None))
                if name is None:
                    continue
                if not o.tensors and p.get("nelems"):
                    o.tensors = [Tensor(name, int(p["nelems"]), size, (int(p["nelems"]),))]
                for t in o.tensors:
                    if t.dtype is None or t.guessed:
                        t.dtype, t.itemsize, t.guessed = name, size, False
                break


def _object_sends(ops: list[Op]) -> None:
    """vLLM sends a pickled object as an int64 ``[1]`` size, then the uint8 payload
    (``GroupCoordinator.isend_object``); when the trace names neither dtype (tensor lists), a
    guessed ``[1]`` send or receive and the next one of that direction are those two."""
    for direction in ("send", "recv"):
        seq = [o for o in ops if o.entry.op == direction and len(o.tensors) == 1]
        for a, b in zip(seq, seq[1:]):
            ta, tb = a.tensors[0], b.tensors[0]
            if ta.guessed and tb.guessed and ta.shape == (1,):
                a.tensors[0] = Tensor("int64", 1, 8, ta.shape)
                b.tensors[0] = Tensor("uint8", tb.numel, 1, tb.shape)


def _outermost(ops: list[Op]) -> list[Op]:
    """Drop an op nested inside an earlier one of the same family on the same thread."""
    ops = sorted(ops, key=lambda o: (o.start_us, -o.end_us))
    open_end: dict[tuple, float] = {}
    out = []
    for o in ops:
        key = (o.tid, o.entry.family)
        if key in open_end and o.start_us >= open_end[key] - 1e-3 and o.end_us > open_end[key]:
            del open_end[key]
        if key in open_end and o.end_us <= open_end[key] + 1e-3:
            continue
        open_end[key] = o.end_us
        out.append(o)
    return out


def _assign_steps(ops: list[Op], steps: list[Step]) -> None:
    starts = [s.start_us for s in steps]
    for o in ops:
        i = bisect_right(starts, o.start_us) - 1
        if i >= 0 and o.start_us <= steps[i].end_us:
            o.step = i
        elif o.entry.op == "send":
            o.step = i if i >= 0 else None
        else:
            o.step = i + 1 if i + 1 < len(steps) else None


def read_rank(path: Path, worker: Worker, default_dtype: str | None = None) -> RankTrace:
    """Parse one worker's trace file (streamed). ``default_dtype``: the dtype of tensors whose
    type the trace does not record (tensor lists: the model's dtype; shm lists end with uint8)."""
    steps_all: list[Step] = []
    shaped: list[Op] = []
    timers: dict[str, list[Op]] = defaultdict(list)
    unknown: Counter = Counter()
    params: list[dict] = []
    for ev in iter_events(path):
        name = ev.get("name", "")
        ts, dur = float(ev.get("ts", 0.0)), float(ev.get("dur", 0.0))
        m = STEP_RANGE.match(name)
        if m:
            a, b, c, d = (int(x) for x in m.groups())
            steps_all.append(Step(ts, ts + dur, a, b, c, d))
            continue
        if name == "record_param_comms":
            a = ev.get("args") or {}
            params.append(
                {
                    "tid": ev.get("tid"),
                    "ts": ts,
                    "dtype": a.get("dtype"),
                    "nelems": a.get("In msg nelems"),
                }
            )
            continue
        entry = lookup(name)
        if entry is None:
            if is_unknown_comm(name):
                unknown[name] += 1
            continue
        op = Op(name, entry, ev.get("tid"), ts, ts + dur)
        if entry.carries in ("shape", "both"):
            args = ev.get("args") or {}
            op.tensors = _tensors(
                args.get("Input Dims"), args.get("Input type"), entry, default_dtype
            )
            op.paired = entry.carries == "both"
            shaped.append(op)
        else:
            timers[entry.family].append(op)
    steps_all.sort(key=lambda s: s.start_us)
    steps = [s for s in steps_all if s.tokens > 0]
    ops = _outermost(shaped)
    _param_comms(ops, params)
    _object_sends(sorted(ops, key=lambda o: o.start_us))
    unpaired: Counter = Counter()
    by_family: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.entry.carries == "shape":
            by_family[o.entry.family].append(o)
    for fam, evs in timers.items():
        evs.sort(key=lambda e: e.start_us)
        mine = by_family.get(fam, [])
        if len(evs) != len(mine) or any(t.end_us < o.start_us for o, t in zip(mine, evs)):
            unpaired[fam] += len(evs)  # no one-to-one order: each op keeps its own span
            continue
        for o, t in zip(mine, evs):
            o.start_us, o.end_us, o.paired = t.start_us, t.end_us, True
    ops.sort(key=lambda o: o.start_us)
    _assign_steps(ops, steps)
    return RankTrace(worker, steps, len(steps_all) - len(steps), ops, unknown, unpaired)
