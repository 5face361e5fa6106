"""The run directory: its schema, atomic writers and readers (see results/README.md).

A run directory ``results/<UTC YYYYmmddTHHMMSSZ>_<name>/`` holds ``spec.yaml``, ``env.json``,
``summary.json`` and one parquet file per table (``TABLES``). Every file is written atomically
(a temp file in the same directory, then ``os.replace``), so a reader never sees half a file.

A run writes ``summary.json`` with ``complete: false`` when it STARTS; only ``RunWriter.finish``
sets ``complete: true``. A killed run therefore always reads as incomplete.

No torch import at module level: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harness import SCHEMA_VERSION, __version__
from harness.errors import UsageError
from harness.measure.nvml import COLUMNS as NVML_SAMPLE_COLUMNS

# ---------------------------------------------------------------- table schemas

_F64, _I64, _STR, _BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


REQUESTS_SCHEMA = pa.schema([
    _f("request_id", _I64, False), _f("replica", _I64, False), _f("arrival_s", _F64, False),
    _f("admitted_s", _F64), _f("first_token_s", _F64), _f("token_times_s", pa.list_(_F64)),
    _f("finish_s", _F64), _f("input_len", _I64, False), _f("output_len", _I64, False),
    _f("warmup", _BOOL, False), _f("completed", _BOOL, False),
])
TOKENS_FIELD = _f("tokens", pa.list_(_I64))   # only when run.record_tokens

STEPS_SCHEMA = pa.schema([
    _f("replica", _I64, False), _f("step", _I64, False), _f("phase", _STR, False),
    _f("n_rows", _I64, False), _f("n_prefill_rows", _I64, False), _f("n_decode_rows", _I64, False),
    _f("n_tokens", _I64, False), _f("padded_tokens", _I64, False), _f("in_flight", _I64, False),
    _f("available", _I64),
    _f("t_submit_s", _F64, False), _f("t_done_s", _F64), _f("warmup", _BOOL),
])

# The columns of ``harness.comm.COMM_COLUMNS``, repeated here because harness.comm imports torch
# and the readers must not; tests/test_results.py asserts the two stay equal.
COMM_COLUMNS = ("rank", "step", "phase", "op", "group", "group_size", "peer", "dtype", "numel", "bytes",
                "t_start_s", "t_end_s")
_COMM_TYPES = {"rank": _I64, "step": _I64, "phase": _STR, "op": _STR, "group": _STR, "group_size": _I64,
               "peer": _I64, "dtype": _STR, "numel": _I64, "bytes": _I64, "t_start_s": _F64, "t_end_s": _F64}
# Derived by harness.measure.comm_stats.with_bandwidth (nccl-tests' algbw/busbw), None if untimed.
COMM_DERIVED = ("time_s", "algbw_gbps", "busbw_gbps")
COMM_SCHEMA = pa.schema([_f(c, _COMM_TYPES[c], c not in ("rank", "op", "group", "bytes", "numel"))
                         for c in COMM_COLUMNS] + [_f(c, _F64) for c in COMM_DERIVED])

STAGES_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp", "step")]
    + [_f(c, _F64) for c in ("t_recv_start_s", "t_recv_end_s", "t_compute_end_s", "t_send_end_s")])

_NVML_INT = {"device", "mem_used_bytes", "mem_total_bytes", "sm_clock_mhz", "temperature_c", "throttle_reasons",
             "nvlink_tx_bytes", "nvlink_rx_bytes", "nvlink_tx_delta_bytes", "nvlink_rx_delta_bytes",
             "rss_bytes", "sys_mem_used_bytes"}
NVML_SCHEMA = pa.schema([_f(c, _I64 if c in _NVML_INT else _F64, c not in ("t_s", "device"))
                         for c in NVML_SAMPLE_COLUMNS] + [_f("node", _STR, False)])

MEMORY_SCHEMA = pa.schema(
    [_f(c, _I64, False) for c in ("rank", "dp", "stage", "tp")]
    + [_f(c, _I64) for c in ("param_bytes", "kv_bytes", "peak_bytes", "predicted_weight_bytes",
                             "predicted_kv_bytes")])

TABLES: dict[str, pa.Schema] = {
    "requests": REQUESTS_SCHEMA, "steps": STEPS_SCHEMA, "comm": COMM_SCHEMA,
    "stages": STAGES_SCHEMA, "nvml": NVML_SCHEMA, "memory": MEMORY_SCHEMA,
}

SUMMARY_FILE, SPEC_FILE, ENV_FILE = "summary.json", "spec.yaml", "env.json"
VERDICTS = ("PASS", "FAIL", "UNMEASURED", "INCOMPLETE")
MEASURED_KEYS = ("throughput_rps", "gpu_utilization_pct", "bubble_ratio", "nvlink_utilization_pct",
                 "memory_per_gpu_gb", "memory_balance_epsilon", "tp_allreduce_bytes_per_layer",
                 "pp_sendrecv_bytes_per_stage", "stage_memory_gb", "model_memory_gb", "total_gpus")


def table_columns(name: str) -> list[str]:
    return list(TABLES[name].names)


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


def rows_to_table(name: str, rows: Iterable[Mapping[str, Any]] | Any) -> pa.Table:
    """Rows (dicts, or a pandas DataFrame) → an arrow table with the schema of ``TABLES[name]``.

    The schema is the minimum: a column outside it is kept with an inferred type (so a newer
    writer loses nothing), and ``requests`` rows with a ``tokens`` key get ``list<int64>``.
    A missing non-nullable value is a bug in the writer: ``ValueError`` naming table, row, column.
    """
    schema = TABLES[name]
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict("records")
    rows = [dict(r) for r in rows]
    required = [f.name for f in schema if not f.nullable]
    extra: list[str] = []
    for i, r in enumerate(rows):
        for c in required:
            v = r.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise ValueError(f"table {name} row {i}: column {c} is required, got {v!r}")
        for c, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[c] = None
            if c not in schema.names and c not in extra:
                extra.append(c)
    for c in extra:
        if name == "requests" and c == "tokens":
            schema = schema.append(TOKENS_FIELD)
        else:
            inferred = pa.array([r.get(c) for r in rows]).type
            schema = schema.append(pa.field(c, pa.string() if pa.types.is_null(inferred) else inferred))
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------- environment

def _git_sha(repo_dir: Path) -> str | None:
    git = shutil.which("git")
    if git is None or not (repo_dir / ".git").exists():
        return None
    try:
        out = subprocess.run([git, "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return None
    dirty = subprocess.run([git, "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False)
    return sha + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _module_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(name)
    except PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no library, no driver: a CPU host
        return None
    try:
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def environment(hostnames: list[str] | None = None, slurm_job_id: str | None = None,
                backend: str | None = None, torch_module: Any = None) -> dict:
    """What ran: harness version + git sha, Python/torch/transformers/CUDA/NCCL/driver versions,
    GPU names and count, hostnames (every rank's, when the run gathered them), Slurm job id.

    Never initialises CUDA on a host without it and never needs git. ``torch_module`` lets a
    test pass a stand-in; by default torch is imported here (not at module import).
    """
    repo = Path(__file__).resolve().parent.parent
    env: dict[str, Any] = {
        "harness_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "git_sha": _git_sha(repo),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "transformers": _module_version("transformers"),
        "hostnames": sorted(set(hostnames)) if hostnames else [socket.gethostname()],
        "slurm_job_id": slurm_job_id if slurm_job_id is not None else os.environ.get("SLURM_JOB_ID"),
        "backend": backend,
        "torch": None, "cuda": None, "nccl": None, "driver": None, "gpu_count": 0, "gpu_names": [],
    }
    torch = torch_module
    if torch is None:
        try:
            import torch  # noqa: F811  (lazy: the report verbs never pay for it)
        except ImportError:
            return env
    env["torch"] = getattr(torch, "__version__", None)
    env["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        env["gpu_count"] = n
        env["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(n)]
        try:
            v = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # torch built without NCCL
            env["nccl"] = None
        env["driver"] = _driver_version()
    return env


# ---------------------------------------------------------------- summary

def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_dir_name(name: str, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"{when.astimezone(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}_{name}"


def new_summary(name: str, hardware: Mapping[str, Any], layout: Mapping[str, Any],
                predicted: Mapping[str, Any] | None = None, started_utc: str | None = None) -> dict:
    """The summary a run writes at its start: every key present, ``complete: false``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "incomplete_reason": "run in progress (or killed before it finished)",
        "name": name,
        "started_utc": started_utc or utc_now(),
        "finished_utc": None,
        "wall_s": None,
        "warmup_s": None,
        "hardware": dict(hardware),
        "layout": dict(layout),
        "metrics": {},
        "slo": [],
        "verdict": "INCOMPLETE",
        "measured": {},
        "predicted": dict(predicted or {}),
        "stage_stats": [],
        "cross_checks": [],
        "notes": [],
    }


def slo_rows(verdicts: Iterable[Any]) -> list[dict]:
    """``harness.slo.SloVerdict`` list → the summary's ``slo`` rows."""
    return [{"target": v.target.text, "measured": v.measured, "passed": v.passed, "margin_pct": v.margin_pct}
            for v in verdicts]


def overall_verdict(slo: list[dict], complete: bool) -> str:
    """INCOMPLETE for an unfinished run; FAIL when any target missed; PASS when every target
    was measured and met; UNMEASURED otherwise (including a run with no targets)."""
    if not complete:
        return "INCOMPLETE"
    if any(r.get("passed") is False for r in slo):
        return "FAIL"
    if slo and all(r.get("passed") is True for r in slo):
        return "PASS"
    return "UNMEASURED"


# ---------------------------------------------------------------- writer

def summary_header(spec: Any, env: Mapping[str, Any] | None = None) -> dict:
    """``hardware`` and ``layout`` of a summary from a validated ``harness.spec.Spec``."""
    env = env or {}
    names = env.get("gpu_names") or []
    lay = spec.layout
    return {
        "hardware": {"gpu": spec.cluster.gpu, "gpu_name": names[0] if names else "cpu",
                     "total_gpus": lay.world_size, "nodes": spec.cluster.nodes,
                     "backend": env.get("backend") or ("nccl" if names else "gloo")},
        "layout": {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
    }


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
