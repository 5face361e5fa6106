"""Reading a JSON file the user named (a config.json, a run's summary, a forecast, an emulate
profile, a benchmark's result): every way it can be wrong is one ``UsageError`` line, exit 2,
naming the input and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import UsageError


def read_json_file(
    path: str | Path,
    what: str | None,
    fix: str,
    *,
    name: str | Path | None = None,
    several: str | None = None,
) -> dict:
    """The JSON object in ``path``. ``what``: the field or flag that named it (None: the path says
    it); ``fix``: what to do instead; ``name``: the file as the user named it (default ``path``,
    e.g. the model folder whose config.json this is); ``several``: the fix when the file holds
    several JSON documents one after another."""
    p = Path(path)
    shown = p if name is None else name
    where = f"{what}: {shown}" if what else str(shown)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{where} not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where} is not readable ({e.__class__.__name__}); {fix}") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as e:
        hint = several if several and e.msg == "Extra data" else fix
        raise UsageError(f"{where} is not valid JSON (line {e.lineno}: {e.msg}); {hint}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} must hold a JSON object; {fix}")
    return data
