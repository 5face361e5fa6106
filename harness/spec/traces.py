"""The Mooncake / AIPerf JSONL trace: read, write, and tell it from the harness's own trace format.

One JSON object per line (Mooncake FAST'25 traces, AIPerf's ``mooncake_trace`` dataset)::

    {"timestamp": 3052, "input_length": 7234, "output_length": 794, "hash_ids": [0, 28, 29, ...]}

* ``timestamp``: arrival in ms (since the trace's clock start; lines sorted by it) → arrival_s = ms
/ 1000;
* ``input_length`` / ``output_length``: prompt and output tokens;
* ``hash_ids`` (optional): one id per block of ``block_size`` prompt tokens, the last block partial:
  len(hash_ids) = ⌈input_length / block_size⌉. Block size: 512 tokens, Mooncake's and AIPerf's
  convention (``workload.trace_block_size`` for a trace made with another). An id stands for its
  block together with everything before it, so two requests whose hash_ids agree on their first k
  entries share exactly their first k blocks of prompt.

Prompts: block ``h`` is ``block_size`` token ids uniform in [0, vocab) drawn from
``numpy.random.default_rng([BLOCK_SEED, h])`` — a pure function of the id, so equal ids give equal
blocks in every request and every run; request i's prompt is its blocks in order, cut to
input_length. They are built when read (:class:`BlockPrompt`), not held: a production trace's
prompts would not fit in memory as lists. A line without hash_ids gets no prompt (the harness's
seeded per-request prompt, shared with nobody); without a vocabulary (the planner) lengths only.

Written from requests (:func:`save_mooncake`): a :class:`BlockPrompt` keeps its ids; other prompts
are cut into blocks and numbered by chained hashing (an id per distinct (previous id, block
tokens), 0, 1, 2 … in order of first appearance); a request without its own prompt gets fresh ids.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from harness.errors import UsageError, shown
from harness.spec.jsonl import read_objects, write_lines

MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
DEFAULT_BLOCK_SIZE = 512
BLOCK_SEED = 0x4D6F6F6E  # "Moon": the prompt content of a block depends on its hash id only


def trace_format(path: str | Path) -> str:
    """ "mooncake" when the first non-blank line is a JSON object with a Mooncake key, else
    "harness" (whose loader reports an unreadable, empty or malformed file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    return (
                        "mooncake"
                        if isinstance(obj, dict) and any(k in obj for k in MOONCAKE_KEYS)
                        else "harness"
                    )
    except (OSError, ValueError):
        pass
    return "harness"


def block_tokens(hash_id: int, block_size: int, vocab_size: int) -> np.ndarray:
    """The ``block_size`` token ids of block ``hash_id`` (see the module docstring)."""
    return np.random.default_rng([BLOCK_SEED, int(hash_id)]).integers(
        0, vocab_size, size=block_size
    )


class BlockPrompt(Sequence[int]):
    """A prompt made of hash-id blocks, built on demand; compares equal to the list it stands
    for."""

    def __init__(self, hash_ids: Sequence[int], length: int, block_size: int, vocab_size: int):
        self.hash_ids, self.length = tuple(int(h) for h in hash_ids), int(length)
        self.block_size, self.vocab_size = int(block_size), int(vocab_size)

    def __len__(self) -> int:
        return self.length

    def tokens(self) -> list[int]:
        if not self.hash_ids:
            return []
        blocks = [block_tokens(h, self.block_size, self.vocab_size) for h in self.hash_ids]
        return np.concatenate(blocks)[: self.length].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.tokens())

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.tokens()[i]
        if not -self.length <= i < self.length:
            raise IndexError(i)
        i %= self.length
        return int(
            block_tokens(self.hash_ids[i // self.block_size], self.block_size, self.vocab_size)[
                i % self.block_size
            ]
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BlockPrompt):
            return (self.hash_ids, self.length, self.block_size, self.vocab_size) == (
                other.hash_ids,
                other.length,
                other.block_size,
                other.vocab_size,
            )
        return isinstance(other, (list, tuple)) and self.tokens() == list(other)

    def __hash__(self) -> int:
        return hash((self.hash_ids, self.length, self.block_size, self.vocab_size))

    def __repr__(self) -> str:
        return f"BlockPrompt(hash_ids={list(self.hash_ids)}, length={self.length})"


def _int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def load_mooncake(
    path: str | Path,
    context_len: int | None = None,
    vocab_size: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> list[tuple[float, int, int, BlockPrompt | None]]:
    """(arrival_s, input_len, output_len, prompt) per line, in file order; every problem is a
    UsageError "FILE:LINE: what is wrong" (blank lines skipped)."""
    path = Path(path)
    if not _int(block_size, 1):
        raise UsageError(f"workload.trace_block_size: must be >= 1 token, got {block_size!r}")
    rows: list[tuple[float, int, int, BlockPrompt | None]] = []
    prev = -math.inf
    for where, obj in read_objects(path):
        unknown = sorted(set(obj) - set(MOONCAKE_KEYS))
        if unknown:
            raise UsageError(
                f"{where}: key {shown(unknown[0])} is not read here (a Mooncake trace line holds "
                f"{', '.join(MOONCAKE_KEYS)}; multi-turn and text fields are not replayed)"
            )
        t = obj.get("timestamp")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise UsageError(
                f'{where}: expected "timestamp" as a number of ms >= 0, got {shown(t)}'
            )
        if t < prev:
            raise UsageError(
                f'{where}: "timestamp" {t} is before the previous line\'s {prev}; sort the trace'
            )
        prev = t
        for key in ("input_length", "output_length"):
            if not _int(obj.get(key), 1):
                raise UsageError(
                    f'{where}: expected "{key}" as a positive integer, got {shown(obj.get(key))}'
                )
        n_in, n_out = obj["input_length"], obj["output_length"]
        if context_len is not None and n_in + n_out > context_len:
            raise UsageError(
                f"{where}: input_length {n_in} + output_length {n_out} exceeds the model "
                f"context of {context_len} tokens"
            )
        ids = obj.get("hash_ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(_int(h, 0) for h in ids):
                raise UsageError(f'{where}: expected "hash_ids" as a list of integers >= 0')
            need = math.ceil(n_in / block_size)
            if len(ids) != need:
                raise UsageError(
                    f"{where}: {len(ids)} hash_ids for input_length {n_in} at {block_size} tokens "
                    f"a block; expected {need} (set workload.trace_block_size to the trace's block "
                    f"size)"
                )
        prompt = (
            None
            if ids is None or vocab_size is None
            else BlockPrompt(ids, n_in, block_size, vocab_size)
        )
        rows.append((t / 1000.0, n_in, n_out, prompt))
    return rows


def hash_ids_for(
    prompts: Iterable[Sequence[int] | None], block_size: int = DEFAULT_BLOCK_SIZE
) -> list[list[int]]:
    """Mooncake ids of each prompt's blocks by chained hashing (see the module docstring); a
    :class:`BlockPrompt` keeps its own ids, a None prompt gets fresh ones (its length unknown here:
    none)."""
    prompts = list(prompts)
    base = 1 + max(
        (h for p in prompts if isinstance(p, BlockPrompt) for h in p.hash_ids), default=-1
    )
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    out: list[list[int]] = []
    for p in prompts:
        if isinstance(p, BlockPrompt):
            out.append(list(p.hash_ids))
            continue
        ids, parent = [], -1
        tokens = list(p or [])
        for start in range(0, len(tokens), block_size):
            key = (parent, tuple(tokens[start : start + block_size]))
            parent = seen.setdefault(key, base + len(seen))
            ids.append(parent)
        out.append(ids)
    return out


def save_mooncake(requests: Any, path: str | Path, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
    """Write requests (objects with arrival_s, input_len, output_len, prompt; or a Trace, whose
    seeded prompts are then hashed too) as a Mooncake trace, atomically."""
    trace = requests if hasattr(requests, "prompt_ids") and hasattr(requests, "requests") else None
    reqs = list(trace.requests if trace is not None else requests)
    prompts = [
        r.prompt if r.prompt is not None or trace is None else trace.prompt_ids(r) for r in reqs
    ]
    ids = hash_ids_for(prompts, block_size)
    fresh = 1 + max((h for row in ids for h in row), default=-1)
    lines = []
    for r, row in zip(reqs, ids):
        if not row:  # no prompt of its own: blocks shared with no other request
            row = list(range(fresh, fresh + math.ceil(r.input_len / block_size)))
            fresh += len(row)
        ms = round(r.arrival_s * 1000.0, 6)
        lines.append(
            json.dumps(
                {
                    "timestamp": int(ms) if ms == int(ms) else ms,
                    "input_length": r.input_len,
                    "output_length": r.output_len,
                    "hash_ids": row,
                }
            )
        )
    write_lines(path, lines)
