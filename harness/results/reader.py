"""Reads a run directory back: summary (schema-checked), spec, environment and tables (pandas).

No torch import: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harness import SCHEMA_VERSION, __version__
from harness.errors import UsageError, shown
from harness.results.schema import ENV_FILE, SPEC_FILE, SUMMARY_FILE, TABLES, VERDICTS
from harness.results.summary_types import SUMMARY_TYPES, check_types
from harness.spec.json_file import read_json_file


@dataclass
class Run:
    """A loaded run directory: its summary, spec, environment and tables (pandas)."""

    path: Path
    summary: dict
    spec: dict
    env: dict
    tables: dict = field(default_factory=dict)
    absent: frozenset = frozenset()  # tables with no file: the engine did not produce them

    def engine_kind(self) -> str:
        """The system under test (``summary.engine.kind``); runs before engines were pluggable:
        reference."""
        eng = self.summary.get("engine")
        return str(eng.get("kind") or "reference") if isinstance(eng, dict) else "reference"

    def plan_note(self) -> str | None:
        """``no plan: REASON`` for a run that has no plan (an import whose model or hardware is
        unknown, ``summary.no_plan``), else None."""
        reason = self.summary.get("no_plan")
        return f"no plan: {reason}" if reason else None

    def absent_note(self, name: str) -> str | None:
        """One line for a report when table ``name`` was not produced by this run's engine, else
        None."""
        if name not in self.absent:
            return None
        what = {
            "comm": "not traced",
            "stages": "no stage timing",
            "steps": "no step records",
            "nvml": "no device sampling",
            "memory": "no per-rank memory",
            "server_metrics": "no server metrics",
        }.get(name, "not recorded")
        kind = self.engine_kind()
        engine = "external engine " + kind if self.external else kind + " engine"
        return f"{what} ({engine}: no {name} table)"

    @property
    def external(self) -> bool:
        """The system under test was a server outside the harness (vllm, openai): no comm/stage
        trace."""
        return self.engine_kind() != "reference"

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
        """The run's ``harness.spec.layout.Layout`` from ``summary.layout``."""
        from harness.spec.layout import Layout

        lay = self.summary.get("layout") or {}
        try:
            return Layout(
                int(lay["tp"]),
                int(lay["pp"]),
                int(lay["dp"]),
                tuple(int(x) for x in lay["layer_split"]),
            )
        except (KeyError, TypeError, ValueError):
            raise UsageError(
                f"{self.path / SUMMARY_FILE}: layout must have tp, pp, dp and layer_split; "
                f"the file was not written by `harness run`"
            ) from None


def _fix_hint(run_dir: Path) -> str:
    return (
        f"give a run directory written by `harness run` (e.g. results/<time>_<name>), not {run_dir}"
    )


def read_summary(run_dir: str | Path) -> dict:
    """``summary.json`` of a run, schema-checked: UsageError for a missing, corrupt or newer
    file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory; {_fix_hint(run_dir)}")
    p = run_dir / SUMMARY_FILE
    data = read_json_file(p, None, _fix_hint(run_dir))
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise UsageError(
            f"{p}: schema_version {version!r} is unknown (this harness reads {SCHEMA_VERSION}); "
            f"rerun with this harness or use the harness version that wrote it"
        )
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"{p}: schema_version {version} is newer than this harness reads ({SCHEMA_VERSION}); "
            f"upgrade harness (this is {__version__})"
        )
    if version < 1:
        raise UsageError(
            f"{p}: schema_version {version} is unknown (this harness reads {SCHEMA_VERSION}); "
            f"rerun the benchmark with this harness"
        )
    bad = check_types(data, SUMMARY_TYPES, "summary")
    if bad is None and data.get("verdict", "INCOMPLETE") not in VERDICTS:
        bad = f"summary.verdict is {shown(data['verdict'])}, expected one of {', '.join(VERDICTS)}"
    if bad is not None:
        raise UsageError(
            f"{p}: {bad if len(bad) <= 200 else bad[:197] + '...'}; it was not written by `harness "
            f"run` as it is "
            "(edited or damaged): rerun the benchmark"
        )
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
        raise UsageError(
            f"{p}: unreadable parquet ({str(e).splitlines()[0]}); delete it or rerun the benchmark"
        ) from None
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise UsageError(
            f"{p}: lacks column(s) {', '.join(missing)}; it was written by another harness "
            f"version, "
            f"rerun the benchmark"
        )
    for f in (
        schema
    ):  # every column of the schema in its type (an int column may be read as float, not text)
        i = table.column_names.index(f.name)
        if table.schema.field(i).type != f.type:
            try:
                table = table.set_column(i, f.name, table.column(i).cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise UsageError(
                    f"{p}: column {f.name} holds {table.schema.field(i).type}, expected {f.type}; "
                    "it was not written by `harness run` as it is: rerun the benchmark"
                ) from None
    df = table.to_pandas()
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)


def load_run(run_dir: str | Path, tables: bool | tuple[str, ...] = True) -> Run:
    """Read a run directory. Missing tables become empty frames with the right columns and are
    named in ``Run.absent`` (an engine that does not produce a table writes no file for it);
    ``tables=False`` reads only summary, spec and env (what history needs); a tuple of names reads
    only those tables (compare: ``("requests",)``)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    spec_p, env_p = run_dir / SPEC_FILE, run_dir / ENV_FILE
    try:
        spec = yaml.safe_load(spec_p.read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"{spec_p}: missing; {_fix_hint(run_dir)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(
            f"{spec_p}: corrupt YAML ({e.__class__.__name__}); rerun the benchmark"
        ) from None
    if not isinstance(spec, dict):
        raise UsageError(f"{spec_p}: must hold a mapping (the resolved spec); rerun the benchmark")
    env = read_json_file(env_p, None, _fix_hint(run_dir))
    wanted = TABLES if tables is True else () if tables is False else tables
    frames = {name: _read_table(run_dir, name) for name in wanted}
    absent = frozenset(name for name in TABLES if not (run_dir / f"{name}.parquet").exists())
    return Run(run_dir, summary, spec, env, frames, absent)


def as_number(v: Any) -> float | None:
    """A finite-or-inf float from a table or summary value; None for missing, NaN, bool or text."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
