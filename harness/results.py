"""The run directory: its schema, atomic writers and readers (see results/README.md).

A run directory ``results/<UTC YYYYmmddTHHMMSSZ>_<name>/`` holds ``spec.yaml``, ``env.json``,
``summary.json`` and one parquet file per table (``TABLES``). Every file is written atomically
(a temp file in the same directory, then ``os.replace``), so a reader never sees half a file.

A run writes ``summary.json`` with ``complete: false`` when it STARTS; only ``RunWriter.finish``
sets ``complete: true``. A killed run therefore always reads as incomplete.

The table schemas live in ``harness.results_schema``, the summary's skeleton and verdict rule in
``harness.results_summary``, ``environment()`` in ``harness.environment``; all re-exported here.

No torch import at module level: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harness import SCHEMA_VERSION, __version__
from harness.environment import environment
from harness.errors import UsageError
from harness.results_schema import (COMM_COLUMNS, COMM_DERIVED, COMM_SCHEMA, ENV_FILE, MEASURED_KEYS, MEMORY_SCHEMA,
                                    NVML_SAMPLE_COLUMNS, NVML_SCHEMA, REQUESTS_SCHEMA, SPEC_FILE, STAGES_SCHEMA,
                                    STEPS_SCHEMA, SUMMARY_FILE, TABLES, TOKENS_FIELD, VERDICTS, rows_to_table,
                                    table_columns)
from harness.results_summary import new_summary, overall_verdict, slo_rows, summary_header, utc_now

__all__ = [
    "COMM_COLUMNS", "COMM_DERIVED", "COMM_SCHEMA", "ENV_FILE", "MEASURED_KEYS", "MEMORY_SCHEMA",
    "NVML_SAMPLE_COLUMNS", "NVML_SCHEMA", "REQUESTS_SCHEMA", "SPEC_FILE", "STAGES_SCHEMA", "STEPS_SCHEMA",
    "SUMMARY_FILE", "TABLES", "TOKENS_FIELD", "VERDICTS", "rows_to_table", "table_columns", "environment",
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "utc_now", "run_dir_name", "new_summary",
    "slo_rows", "overall_verdict", "summary_header", "RunWriter", "Run", "read_summary", "load_run",
]

# ---------------------------------------------------------------- atomic writes

def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):           # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):         # numpy arrays
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _clean_floats(o: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean_floats(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean_floats(v) for v in o]
    return o


def atomic_write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(_clean_floats(data), indent=1, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


# ---------------------------------------------------------------- run directory name

def run_dir_name(name: str, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"{when.astimezone(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}_{name}"


# ---------------------------------------------------------------- writer

class RunWriter:
    """Writes one run directory. Only global rank 0 uses it.

    The run's order::

        w = RunWriter.create(run_dir, spec)      # spec.yaml, env.json, summary.json (complete=false)
        w.flush_requests(records)                # every few seconds while running (whole table)
        w.write_final(summary, tables)           # every table, then summary.json last
      or, when stopped early (signal, timeout, a failed rank):
        w.write_partial(summary, records)        # requests so far + summary with complete=false

    Tables are replaced whole on each write; summary.json is always written after the tables it
    describes, so ``complete: true`` on disk means every table is there. A later summary is merged
    over the one written at start, so keys the caller leaves out (``started_utc``, ``hardware``...)
    are kept.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.summary: dict | None = None

    @classmethod
    def create(cls, run_dir: str | Path, spec: Any, env: Mapping[str, Any] | None = None,
               summary: dict | None = None) -> "RunWriter":
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

    def start(self, spec_dict: Mapping[str, Any], env: Mapping[str, Any], summary: dict) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--results-dir: cannot create {self.dir} ({e.strerror}); give a writable folder") from None
        if (self.dir / SUMMARY_FILE).exists():
            raise UsageError(f"--results-dir: {self.dir} already holds a run (summary.json); give a new folder")
        atomic_write_text(self.dir / SPEC_FILE, yaml.safe_dump(_clean_floats(dict(spec_dict)), sort_keys=False))
        atomic_write_json(self.dir / ENV_FILE, dict(env))
        self.write_summary(dict(summary, complete=False, verdict="INCOMPLETE"))

    def write_summary(self, summary: dict) -> None:
        """summary.json, made consistent: the schema version; an incomplete run's verdict is INCOMPLETE."""
        summary = dict(summary, schema_version=SCHEMA_VERSION)
        if not summary.get("complete"):
            summary["complete"] = False
            summary["verdict"] = "INCOMPLETE"
            summary.setdefault("incomplete_reason", "run did not finish")
            if not summary.get("incomplete_reason"):
                summary["incomplete_reason"] = "run did not finish"
        elif summary.get("verdict") not in VERDICTS[:3]:
            summary["verdict"] = overall_verdict(summary.get("slo") or [], True)
        self.summary = summary
        atomic_write_json(self.dir / SUMMARY_FILE, summary)

    def write_table(self, name: str, rows: Iterable[Mapping[str, Any]] | Any) -> Path:
        """The whole table ``name`` (one of ``TABLES``), replacing any earlier write of it."""
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; use one of {', '.join(TABLES)}")
        table = rows_to_table(name, rows)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return atomic_write_bytes(self.dir / f"{name}.parquet", buf.getvalue())

    def flush_requests(self, records: Iterable[Any], tokens: Mapping[int, list[int]] | None = None) -> Path:
        """``RequestRecord`` objects (or their dicts) → requests.parquet; ``tokens`` (request_id →
        token ids) adds the ``tokens`` column (run.record_tokens)."""
        rows = []
        for r in list(records):
            d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
            if tokens is not None:
                d["tokens"] = [int(t) for t in tokens.get(d["request_id"], [])]
            rows.append(d)
        return self.write_table("requests", rows)

    def write_partial(self, summary: dict, records: Iterable[Any] | None = None) -> None:
        """A stopped run: the requests so far, then summary.json with ``complete: false``."""
        if records is not None:
            self.flush_requests(records)
        summary = {**(self.summary or {}), **summary, "complete": False}
        summary["finished_utc"] = summary.get("finished_utc") or utc_now()
        self.write_summary(summary)

    def write_final(self, summary: dict, tables: Mapping[str, Any],
                    hostnames: list[str] | None = None) -> None:
        """Every table in ``tables`` (name → rows), env.json's hostnames when given, then the summary.

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
        summary = {**(self.summary or {}), **summary}   # keeps started_utc, name, ... from start()
        summary["finished_utc"] = summary.get("finished_utc") or utc_now()
        if summary.get("complete"):
            summary["incomplete_reason"] = None
            if summary.get("verdict") not in VERDICTS[:3]:
                summary["verdict"] = overall_verdict(summary.get("slo") or [], True)
        self.write_summary(summary)


# ---------------------------------------------------------------- reader

@dataclass
class Run:
    """A loaded run directory: its summary, spec, environment and tables (pandas)."""

    path: Path
    summary: dict
    spec: dict
    env: dict
    tables: dict = field(default_factory=dict)

    def table(self, name: str):
        return self.tables[name]

    @property
    def requests(self):
        return self.tables["requests"]

    @property
    def steps(self):
        return self.tables["steps"]

    @property
    def comm(self):
        return self.tables["comm"]

    @property
    def stages(self):
        return self.tables["stages"]

    @property
    def nvml(self):
        return self.tables["nvml"]

    @property
    def memory(self):
        return self.tables["memory"]

    @property
    def complete(self) -> bool:
        return bool(self.summary.get("complete"))

    def layout(self):
        """The run's ``harness.layout.Layout`` from ``summary.layout``."""
        from harness.layout import Layout
        lay = self.summary.get("layout") or {}
        try:
            return Layout(int(lay["tp"]), int(lay["pp"]), int(lay["dp"]), tuple(int(x) for x in lay["layer_split"]))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{self.path / SUMMARY_FILE}: layout must have tp, pp, dp and layer_split; "
                             f"the file was not written by `harness run`") from None


def _fix_hint(run_dir: Path) -> str:
    return f"give a run directory written by `harness run` (e.g. results/<time>_<name>), not {run_dir}"


def read_summary(run_dir: str | Path) -> dict:
    """``summary.json`` of a run, schema-checked: UsageError for a missing, corrupt or newer file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory; {_fix_hint(run_dir)}")
    p = run_dir / SUMMARY_FILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{p}: missing; {_fix_hint(run_dir)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: corrupt JSON ({e.__class__.__name__}: {e}); rerun the benchmark to rewrite it") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p}: must hold a JSON object; rerun the benchmark to rewrite it")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise UsageError(f"{p}: schema_version {version!r} is unknown (this harness reads {SCHEMA_VERSION}); "
                         f"rerun with this harness or use the harness version that wrote it")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{p}: schema_version {version} is newer than this harness reads ({SCHEMA_VERSION}); "
                         f"upgrade harness (this is {__version__})")
    if version < 1:
        raise UsageError(f"{p}: schema_version {version} is unknown (this harness reads {SCHEMA_VERSION}); "
                         f"rerun the benchmark with this harness")
    return data


def _read_table(run_dir: Path, name: str):
    import pandas as pd

    schema = TABLES[name]
    p = run_dir / f"{name}.parquet"
    if not p.exists():
        return schema.empty_table().to_pandas()
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise UsageError(f"{p}: unreadable parquet ({str(e).splitlines()[0]}); delete it or rerun the benchmark") from None
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise UsageError(f"{p}: lacks column(s) {', '.join(missing)}; it was written by another harness version, "
                         f"rerun the benchmark")
    df = table.to_pandas()
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)


def load_run(run_dir: str | Path, tables: bool = True) -> Run:
    """Read a run directory. Missing optional tables become empty frames with the right columns;
    ``tables=False`` reads only summary, spec and env (what compare and history need)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    spec_p, env_p = run_dir / SPEC_FILE, run_dir / ENV_FILE
    try:
        spec = yaml.safe_load(spec_p.read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"{spec_p}: missing; {_fix_hint(run_dir)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"{spec_p}: corrupt YAML ({e.__class__.__name__}); rerun the benchmark") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{spec_p}: must hold a mapping (the resolved spec); rerun the benchmark")
    try:
        env = json.loads(env_p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{env_p}: missing; {_fix_hint(run_dir)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{env_p}: corrupt JSON ({e.__class__.__name__}); rerun the benchmark") from None
    frames = {name: _read_table(run_dir, name) for name in TABLES} if tables else {}
    return Run(run_dir, summary, spec, env if isinstance(env, dict) else {}, frames)
