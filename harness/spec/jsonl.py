"""JSON Lines files, the shape both trace formats share (``trace_file.py``: the harness's own;
``traces.py``: Mooncake/AIPerf): read as objects with every problem named ``FILE:LINE``, written
atomically. Pure (json only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import UsageError


def read_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("FILE:LINE", object)`` per non-blank line; UsageError for an unreadable or binary file, a
    line that is not JSON, or one that is not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(
            f"workload.trace: {path} is not UTF-8 text (a binary file?); give a JSONL trace, "
            "one JSON object per line"
        ) from None
    except OSError as e:
        raise UsageError(f"workload.trace: cannot read {path}: {e.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """One line each, atomically: a temp file in the same directory, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
