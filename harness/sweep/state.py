"""The sweep's folder: ``sweep.json`` (written atomically after every run, ``complete: false``
until the sweep ends), one run directory per (layout, load) at ``DIR/<layout>/<axis>-<load>``
(``tp2-pp4/rate-4``), and what makes a sweep resumable.

Resume: a sweep started again with the same arguments in the same folder reuses every run whose
``summary.json`` says ``complete: true`` (the run key is the layout and the load, so the same
arguments name the same folders); a run directory left unfinished (killed, failed) is removed and
run again. Other arguments in a folder that holds a sweep, or a folder that holds anything else,
are refused before anything starts (one line, exit 2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.errors import UsageError
from harness.results.atomic import atomic_write_json
from harness.results.writer import read_summary_file
from harness.spec.json_file import read_json_file

KIND = "harness.sweep/1"
SWEEP_FILE = "sweep.json"


def open_root(root: Path, args: dict) -> dict | None:
    """Check (and create) the sweep folder for ``args``; the earlier ``sweep.json`` when this is a
    resumed sweep, else None."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise UsageError(f"--results-dir: {root} is a file; give a new folder")
    doc_path = root / SWEEP_FILE
    if doc_path.is_file():
        old = read_json_file(doc_path, "--results-dir", "give a new folder")
        if old.get("kind") != KIND:
            raise UsageError(f"--results-dir: {doc_path} is not a sweep's; give a new folder")
        if old.get("args") != args:
            diff = sorted(
                k
                for k in set(args) | set(old.get("args") or {})
                if args.get(k) != (old.get("args") or {}).get(k)
            )
            raise UsageError(
                f"--results-dir: {root} holds a sweep with other arguments ({', '.join(diff)}); "
                "rerun it with the same arguments to resume, or give a new folder"
            )
        return old
    if root.is_dir() and any(root.iterdir()):
        raise UsageError(
            f"--results-dir: {root} already holds files but no {SWEEP_FILE}; give a new or empty "
            "folder (nothing was changed)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--results-dir: cannot create {root} ({e.strerror}); give another folder")
    return None


def run_dir(root: Path, layout_name: str, load_label: str) -> Path:
    return Path(root) / layout_name / load_label


def finished(path: Path) -> dict | None:
    """The run's summary when it ran to its end (``complete: true``), else None."""
    summary = read_summary_file(path) if path.is_dir() else None
    return summary if summary and summary.get("complete") is True else None


def clear_unfinished(root: Path, path: Path) -> bool:
    """Remove an unfinished run directory inside the sweep folder so the run starts fresh; True
    when there was one."""
    path, root = Path(path).resolve(), Path(root).resolve()
    if root not in path.parents:
        raise ValueError(f"{path} is not inside the sweep folder {root}")
    if path.exists() and finished(path) is None:
        shutil.rmtree(path)
        return True
    return False


def write(root: Path, doc: dict) -> Path:
    return atomic_write_json(Path(root) / SWEEP_FILE, doc)
