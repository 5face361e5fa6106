"""JSONL traces: one request per line ``{"arrival_s", "input_len", "output_len"[, "prompt"]}``, read
with every problem named by FILE:LINE, written atomically.

Pure (json only). ``harness.spec.workload.build_trace`` replays a trace named by ``workload.trace``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError, shown
from harness.spec.jsonl import read_objects, write_lines
from harness.spec.traces import load_mooncake, trace_format

TRACE_KEYS = ("arrival_s", "input_len", "output_len", "prompt")


@dataclass(frozen=True)
class Request:
    request_id: int
    arrival_s: float  # scheduled, seconds since the run's start; 0.0 for closed loop
    input_len: int
    output_len: int  # target output tokens
    prompt: list[int] | None = None  # None: derive with Trace.prompt_ids (seeded)


def save_trace(requests: Any, path: str | Path, include_prompts: bool = False) -> None:
    """Write one JSON object per line {"arrival_s", "input_len", "output_len"[, "prompt"]},
    atomically (temp file in the same directory, then os.replace). With include_prompts
    and a Trace, seeded prompts are materialised too."""
    trace = requests if hasattr(requests, "prompt_ids") else None  # a Trace, or a list of Requests
    reqs = trace.requests if trace is not None else requests
    lines = []
    for r in reqs:
        obj: dict[str, Any] = {
            "arrival_s": r.arrival_s,
            "input_len": r.input_len,
            "output_len": r.output_len,
        }
        if r.prompt is not None:
            obj["prompt"] = list(r.prompt)
        elif include_prompts and trace is not None:
            obj["prompt"] = trace.prompt_ids(r)
        lines.append(json.dumps(obj, separators=(",", ":")))
    write_lines(path, lines)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def load_trace(
    path: str | Path,
    context_len: int | None = None,
    vocab_size: int | None = None,
    block_size: int = 512,
) -> list[Request]:
    """Read a JSONL trace (json only; blank lines skipped): this format, or a Mooncake/AIPerf one
    (harness.spec.traces, ``block_size`` tokens per hash id), told apart per file. Request ids are
    0, 1, … in file order. Every problem raises UsageError "FILE:LINE: what is wrong"."""
    path = Path(path)
    if trace_format(path) == "mooncake":
        return [
            Request(i, *row)
            for i, row in enumerate(load_mooncake(path, context_len, vocab_size, block_size))
        ]
    reqs: list[Request] = []
    prev = 0.0
    for where, obj in read_objects(path):
        unknown = sorted(set(obj) - set(TRACE_KEYS))
        if unknown:
            raise UsageError(
                f"{where}: unknown key {shown(unknown[0])}; allowed: {', '.join(TRACE_KEYS)}"
            )
        t = obj.get("arrival_s")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise UsageError(f'{where}: expected "arrival_s" as a number >= 0, got {shown(t)}')
        if t < prev:
            raise UsageError(
                f'{where}: "arrival_s" {t} is before the previous line\'s {prev}; '
                "sort the trace by arrival_s"
            )
        prev = float(t)
        for key in ("input_len", "output_len"):
            if not _is_pos_int(obj.get(key)):
                raise UsageError(
                    f'{where}: expected "{key}" as a positive integer, got {shown(obj.get(key))}'
                )
        i_len, o_len = obj["input_len"], obj["output_len"]
        if context_len is not None and i_len + o_len > context_len:
            raise UsageError(
                f"{where}: input_len {i_len} + output_len {o_len} exceeds the "
                f"model context of {context_len} tokens"
            )
        prompt = obj.get("prompt")
        if prompt is not None:
            if (
                not isinstance(prompt, list)
                or len(prompt) != i_len
                or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in prompt
                )
            ):
                raise UsageError(
                    f'{where}: expected "prompt" as a list of input_len={i_len} '
                    "non-negative token ids"
                )
            if vocab_size is not None and prompt and max(prompt) >= vocab_size:
                raise UsageError(
                    f'{where}: "prompt" token id {max(prompt)} is outside the '
                    f"vocabulary [0, {vocab_size})"
                )
        reqs.append(Request(len(reqs), float(t), i_len, o_len, prompt))
    if not reqs:
        raise UsageError(
            f"workload.trace: {path} holds no requests; give at least one line such as "
            '{"arrival_s": 0, "input_len": 128, "output_len": 128}'
        )
    return reqs
