"""Writes one run directory (see results/README.md): ``spec.yaml``, ``env.json``, ``summary.json``
and one parquet file per table (``harness.results.schema.TABLES``).

A run writes ``summary.json`` with ``complete: false`` when it STARTS; only ``write_final`` with a
complete summary sets ``complete: true``. A killed run therefore always reads as incomplete.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pyarrow.parquet as pq
import yaml

from harness import SCHEMA_VERSION
from harness.errors import UsageError
from harness.results.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_floats,
)
from harness.results.environment import environment
from harness.results.schema import (
    ENV_FILE,
    FINAL_VERDICTS,
    SPEC_FILE,
    SUMMARY_FILE,
    TABLES,
    rows_to_table,
)
from harness.results.summary import new_summary, overall_verdict, summary_header, utc_now


def default_run_dir(name: str, root: str = "results") -> Path:
    """``results/<UTC YYYYmmddTHHMMSSZ>_<name>``: where a run goes when no folder is given."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(root) / f"{stamp}_{name}"


def check_new_run_dir(run_dir: str | Path) -> Path:
    """Refuse, before anything starts, a run directory that cannot become a new run: a file, a
    folder that already holds a run or holds anything else (a person's files are never written
    over), or a place that cannot be written. Returns the resolved path (created, empty)."""
    p = Path(run_dir).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"--results-dir: {p} is a file; give a new folder")
    if (p / SUMMARY_FILE).exists():
        raise UsageError(
            f"--results-dir: {p.resolve()} already holds a run; give a new folder (nothing was "
            f"changed)"
        )
    if p.is_dir() and any(p.iterdir()):
        raise UsageError(
            f"--results-dir: {p.resolve()} already holds files but no run; give a new or empty "
            f"folder "
            "(nothing was changed)"
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".harness-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"--results-dir: cannot write in {p} ({e.strerror or type(e).__name__}); "
            "give a writable folder"
        ) from None
    return p.resolve()


def read_summary_file(run_dir: str | Path) -> dict | None:
    """``summary.json`` as written, or None when it is missing or not a JSON object."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def amend_summary(run_dir: str | Path, **fields: Any) -> dict | None:
    """Change ``summary.json`` of a finished world from outside it (the launcher, once no rank can
    write any more); ``complete=False`` also makes the verdict INCOMPLETE. None when there is
    none."""
    summary = read_summary_file(run_dir)
    if summary is None:
        return None
    path = Path(run_dir) / SUMMARY_FILE
    summary.update(fields)
    if not summary.get("complete"):
        summary["complete"], summary["verdict"] = False, "INCOMPLETE"
    atomic_write_json(path, summary)
    return summary


def run_dir_name(name: str, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"{when.astimezone(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}_{name}"


def _serialised(method):
    """One write at a time: a stop thread (signal, timeout) and the main thread may both write."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class RunWriter:
    """Writes one run directory. Only global rank 0 uses it.

    The run's order::

        w = RunWriter.create(run_dir, spec)      # spec.yaml, env.json, summary.json
        (complete=false)
        w.flush_requests(records)                # every few seconds while running (whole table)
        w.write_final(summary, tables)           # every table, then summary.json last
      or, when stopped early (signal, timeout, a failed rank):
        w.write_partial(summary, records)        # requests so far + summary with complete=false

    Tables are replaced whole on each write; summary.json is always written after the tables it
    describes, so ``complete: true`` on disk means every table is there. A later summary is merged
    over the one written at start, so keys the caller leaves out (``started_utc``, ``hardware``...)
    are kept."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.summary: dict | None = None
        self._lock = threading.RLock()
        # Once a run was stopped (write_partial), no later write may call it complete; and
        # ``stop_check`` (set by the engine) may veto ``complete: true`` at the moment it is
        # written.
        self.stopped: str | None = None
        self.stop_check: Callable[[], str | None] | None = None

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        spec: Any,
        env: Mapping[str, Any] | None = None,
        summary: dict | None = None,
    ) -> "RunWriter":
        """Start the run directory ``run_dir`` (the exact folder) for a validated spec.

        ``env`` defaults to :func:`environment`; ``summary`` to :func:`new_summary` with the
        spec's hardware and layout. Refuses a folder that already holds a run.
        """
        w = cls(run_dir)
        env = dict(env) if env is not None else environment()
        header = summary_header(spec, env)
        env["backend"] = env.get("backend") or header["hardware"]["backend"]
        if summary is None:
            summary = new_summary(spec.name, **header)
        w.start(spec.to_dict() if hasattr(spec, "to_dict") else dict(spec), env, summary)
        return w

    @_serialised
    def start(self, spec_dict: Mapping[str, Any], env: Mapping[str, Any], summary: dict) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"--results-dir: cannot create {self.dir} ({e.strerror}); give a writable folder"
            ) from None
        if (self.dir / SUMMARY_FILE).exists():
            raise UsageError(
                f"--results-dir: {self.dir} already holds a run (summary.json); give a new folder"
            )
        atomic_write_text(
            self.dir / SPEC_FILE, yaml.safe_dump(clean_floats(dict(spec_dict)), sort_keys=False)
        )
        atomic_write_json(self.dir / ENV_FILE, dict(env))
        self.write_summary(dict(summary, complete=False, verdict="INCOMPLETE"))

    @_serialised
    def write_summary(self, summary: dict) -> None:
        """summary.json, made consistent: the schema version; an incomplete run's verdict is
        INCOMPLETE."""
        summary = dict(summary, schema_version=SCHEMA_VERSION)
        if summary.get("complete"):
            veto = self.stopped or (self.stop_check() if self.stop_check is not None else None)
            if veto:
                summary["complete"], summary["incomplete_reason"] = False, veto
        if not summary.get("complete"):
            summary["complete"] = False
            summary["verdict"] = "INCOMPLETE"
            summary.setdefault("incomplete_reason", "run did not finish")
            if not summary.get("incomplete_reason"):
                summary["incomplete_reason"] = "run did not finish"
        elif summary.get("verdict") not in FINAL_VERDICTS:
            summary["verdict"] = overall_verdict(summary.get("slo") or [], True)
        self.summary = summary
        atomic_write_json(self.dir / SUMMARY_FILE, summary)

    @_serialised
    def write_table(self, name: str, rows: Iterable[Mapping[str, Any]] | Any) -> Path:
        """The whole table ``name`` (one of ``TABLES``), replacing any earlier write of it."""
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; use one of {', '.join(TABLES)}")
        table = rows_to_table(name, rows)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return atomic_write_bytes(self.dir / f"{name}.parquet", buf.getvalue())

    @_serialised
    def flush_requests(
        self, records: Iterable[Any], tokens: Mapping[int, list[int]] | None = None
    ) -> Path:
        """``RequestRecord`` objects (or their dicts) → requests.parquet; ``tokens`` (request_id →
        token ids) adds the ``tokens`` column (run.record_tokens)."""
        rows = []
        for r in list(records):
            d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
            if tokens is not None:
                d["tokens"] = [int(t) for t in tokens.get(d["request_id"], [])]
            rows.append(d)
        return self.write_table("requests", rows)

    @_serialised
    def write_partial(self, summary: dict, records: Iterable[Any] | None = None) -> None:
        """A stopped run: the requests so far, then summary.json with ``complete: false``."""
        if records is not None:
            self.flush_requests(records)
        summary = {**(self.summary or {}), **summary, "complete": False}
        summary["finished_utc"] = summary.get("finished_utc") or utc_now()
        self.stopped = self.stopped or summary.get("incomplete_reason") or "run stopped"
        self.write_summary(summary)

    @_serialised
    def write_final(
        self, summary: dict, tables: Mapping[str, Any], hostnames: list[str] | None = None
    ) -> None:
        """Every table in ``tables`` (name → rows), env.json's hostnames when given, then the
        summary.

        ``summary['complete']`` says whether the run finished; when true, ``finished_utc`` is
        filled and ``verdict`` is computed from ``slo`` if the caller left it out.
        """
        for name, rows in tables.items():
            self.write_table(name, rows)
        if hostnames:
            env_p = self.dir / ENV_FILE
            env = json.loads(env_p.read_text()) if env_p.exists() else {}
            env["hostnames"] = sorted(set(hostnames))
            atomic_write_json(env_p, env)
        summary = {**(self.summary or {}), **summary}  # keeps started_utc, name, ... from start()
        summary["finished_utc"] = summary.get("finished_utc") or utc_now()
        if summary.get("complete"):
            summary["incomplete_reason"] = None
            if summary.get("verdict") not in FINAL_VERDICTS:
                summary["verdict"] = overall_verdict(summary.get("slo") or [], True)
        self.write_summary(summary)
