"""The run directory contract: table schemas, summary, atomic writes, incomplete runs, reader
errors."""

from __future__ import annotations

import json
import os
import stat
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import SCHEMA_VERSION
from harness.errors import UsageError
from harness.measure.metrics import RequestRecord
from harness.measure.nvml import COLUMNS as NVML_COLUMNS
from harness.results.atomic import atomic_write_text
from harness.results.environment import environment
from harness.results.reader import load_run
from harness.results.schema import (
    COMM_COLUMNS,
    COMM_DERIVED,
    MEASURED_KEYS,
    OPTIONAL_REQUEST_FIELDS,
    TABLES,
    rows_to_table,
)
from harness.results.summary import new_summary, overall_verdict
from harness.results.writer import RunWriter, run_dir_name
from run_fixtures import SynthRun, build_synthetic_run

SUMMARY_KEYS = {
    "schema_version",
    "complete",
    "incomplete_reason",
    "name",
    "started_utc",
    "finished_utc",
    "wall_s",
    "warmup_s",
    "hardware",
    "layout",
    "metrics",
    "slo",
    "verdict",
    "measured",
    "predicted",
    "stage_stats",
    "cross_checks",
    "notes",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return build_synthetic_run(tmp_path_factory.mktemp("synth") / "run")


def _check_tables(run_dir, record_tokens=False):
    assert not (run_dir / "server_metrics.parquet").exists()  # an external engine's table only
    for name, schema in TABLES.items():
        if name == "server_metrics":
            continue
        p = run_dir / f"{name}.parquet"
        assert p.exists(), p
        got = pq.read_schema(p)
        for f in schema:
            assert got.field(f.name).type == f.type, (name, f.name, got.field(f.name).type)
    req = pq.read_schema(run_dir / "requests.parquet")
    assert ("tokens" in req.names) == record_tokens
    if record_tokens:
        assert req.field("tokens").type == pa.list_(pa.int64())
    assert req.field("token_times_s").type == pa.list_(pa.float64())


def test_schemas_match_the_writers_columns():
    import harness.engines.reference.comm
    from harness.measure.stages import STAGE_COLUMNS

    assert tuple(TABLES["comm"].names) == harness.engines.reference.comm.COMM_COLUMNS + COMM_DERIVED
    assert harness.engines.reference.comm.COMM_COLUMNS == COMM_COLUMNS
    assert tuple(TABLES["nvml"].names) == tuple(NVML_COLUMNS) + ("node",)
    assert tuple(TABLES["stages"].names) == STAGE_COLUMNS
    # The record's optional fields are optional columns: runs written before them still read.
    optional = {"sent_s", "output_tokens"}
    assert set(RequestRecord.__dataclass_fields__) == set(TABLES["requests"].names) | optional
    assert optional <= set(OPTIONAL_REQUEST_FIELDS)
    assert {
        "replica",
        "step",
        "phase",
        "n_rows",
        "n_prefill_rows",
        "n_decode_rows",
        "n_tokens",
        "padded_tokens",
        "in_flight",
        "t_submit_s",
        "t_done_s",
    } <= set(TABLES["steps"].names)
    assert TABLES["memory"].names == [
        "rank",
        "dp",
        "stage",
        "tp",
        "param_bytes",
        "kv_bytes",
        "peak_bytes",
        "predicted_weight_bytes",
        "predicted_kv_bytes",
    ]


def test_synthetic_run_tables_and_summary(synth):
    _check_tables(synth)
    run = load_run(synth)
    assert set(run.summary) >= SUMMARY_KEYS
    assert run.summary["schema_version"] == SCHEMA_VERSION and run.complete
    # its p99 targets rest on 24 requests, none over: undecided (275 more would pass them)
    assert run.summary["verdict"] == "INCONCLUSIVE"
    rows = {r["target"]: r for r in run.summary["slo"]}
    assert rows["ttft_p99_ms <= 2000"]["more_requests"] == 275
    assert rows["throughput_rps >= 2"]["verdict"] == "PASS"
    assert set(run.summary["measured"]) <= set(MEASURED_KEYS)
    assert run.spec["parallel"]["tp"] == 2 and run.env["hostnames"] == ["node0"]
    assert len(run.requests) == 26 and int(run.requests["warmup"].sum()) == 2
    # 240 steps x 8 ranks; every stage-row time is ordered
    assert len(run.stages) == 240 * 8
    st = run.stages
    assert (
        (st.t_recv_start_s <= st.t_recv_end_s)
        & (st.t_recv_end_s <= st.t_compute_end_s)
        & (st.t_compute_end_s <= st.t_send_end_s)
    ).all()
    assert list(run.tables) == list(TABLES)
    for f in (synth / n for n in ("summary.json", "spec.yaml", "env.json", "requests.parquet")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert not [p for p in synth.iterdir() if p.name.endswith(".tmp")]


def test_record_tokens_adds_the_tokens_column(tmp_path):
    d = build_synthetic_run(
        tmp_path / "run", SynthRun(record_tokens=True, steps=20, with_nvml=False)
    )
    _check_tables_partial = pq.read_table(d / "requests.parquet")
    assert _check_tables_partial.schema.field("tokens").type == pa.list_(pa.int64())
    run = load_run(d)
    assert list(run.requests["tokens"].iloc[3]) == list(range(16))
    # absent → empty frame
    assert len(run.nvml) == 0 and list(run.nvml.columns) == list(TABLES["nvml"].names)


def _writer(tmp_path):
    w = RunWriter(tmp_path / "run")
    hw = {"gpu": "cpu", "gpu_name": "cpu", "total_gpus": 8, "nodes": 1, "backend": "gloo"}
    lay = {"tp": 2, "pp": 4, "dp": 1, "layer_split": [2, 2, 2, 2]}
    w.start(
        {"name": "t"},
        {"hostnames": ["h"]},
        new_summary("t", hw, lay, started_utc="2025-01-01T00:00:00Z"),
    )
    return w


def _rec(i, done=True):
    return RequestRecord(
        i,
        0,
        0.1 * i,
        0.1 * i,
        0.1 * i + 0.05,
        [0.1 * i + 0.05, 0.1 * i + 0.08],
        0.1 * i + 0.08 if done else None,
        10,
        2,
        False,
        done,
    )


def test_a_started_run_reads_as_incomplete_until_finished(tmp_path):
    w = _writer(tmp_path)
    run = load_run(w.dir)
    assert run.summary["complete"] is False and run.summary["verdict"] == "INCOMPLETE"
    assert run.summary["incomplete_reason"]
    w.flush_requests([_rec(0), _rec(1, done=False)])
    run = load_run(w.dir)  # killed here: requests so far are on disk, still incomplete
    assert len(run.requests) == 2 and not run.complete
    slo = [{"target": "ttft_p99_ms <= 2000", "measured": 50.0, "passed": True, "margin_pct": 97.5}]
    w.write_final({"complete": True, "slo": slo, "metrics": {"completed": 2}}, {"steps": []})
    s = load_run(w.dir).summary
    assert s["complete"] is True and s["verdict"] == "PASS" and s["incomplete_reason"] is None
    # kept from start
    assert s["started_utc"] == "2025-01-01T00:00:00Z" and s["hardware"]["total_gpus"] == 8
    assert s["finished_utc"]


def test_write_partial_keeps_the_run_incomplete_with_its_reason(tmp_path):
    w = _writer(tmp_path)
    w.write_partial({"metrics": {"completed": 1}, "complete": True}, [_rec(0)])
    s = load_run(w.dir).summary
    assert s["complete"] is False and s["verdict"] == "INCOMPLETE"
    w.write_partial({"incomplete_reason": "received SIGTERM"}, [_rec(0)])
    s = load_run(w.dir).summary
    assert s["incomplete_reason"] == "received SIGTERM" and s["name"] == "t"


def test_a_final_summary_marked_incomplete_stays_incomplete(tmp_path):
    w = _writer(tmp_path)
    w.write_final(
        {"complete": False, "incomplete_reason": "run.timeout_s=5 exceeded", "verdict": "PASS"}, {}
    )
    s = load_run(w.dir).summary
    assert (s["complete"], s["verdict"], s["incomplete_reason"]) == (
        False,
        "INCOMPLETE",
        "run.timeout_s=5 exceeded",
    )


def test_create_writes_spec_env_summary_and_refuses_an_existing_run(tmp_path):
    from harness.spec.spec import load_spec

    spec = load_spec("configs/tiny-tp2-pp4-cpu.yaml")
    d = tmp_path / run_dir_name(spec.name)
    w = RunWriter.create(d, spec, env={"hostnames": ["a"]})
    run = load_run(w.dir)
    assert run.spec["parallel"]["tp"] == 2 and run.spec["name"] == "tiny-tp2-pp4-cpu"
    assert run.summary["layout"] == {"tp": 2, "pp": 4, "dp": 1, "layer_split": [2, 2, 2, 2]}
    assert run.summary["hardware"]["backend"] == "gloo" and run.env["backend"] == "gloo"
    assert not run.complete
    with pytest.raises(UsageError, match="already holds a run"):
        RunWriter.create(d, spec, env={})


def test_atomic_write_leaves_the_old_file_when_replace_fails(tmp_path, monkeypatch):
    p = tmp_path / "summary.json"
    atomic_write_text(p, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["summary.json"]  # temp file removed


def test_rows_to_table_requires_values_and_keeps_extra_columns():
    with pytest.raises(ValueError, match="table memory row 0: column rank is required"):
        rows_to_table("memory", [{"dp": 0, "stage": 0, "tp": 0}])
    t = rows_to_table("memory", [{"rank": 0, "dp": 0, "stage": 0, "tp": 0, "note": "x"}])
    assert t.column("note").to_pylist() == ["x"] and t.column("peak_bytes").to_pylist() == [None]


def test_overall_verdict():
    ok = {"passed": True}
    assert overall_verdict([ok], False) == "INCOMPLETE"
    assert overall_verdict([ok, {"passed": False}], True) == "FAIL"
    assert overall_verdict([ok, {"passed": None}], True) == "UNMEASURED"
    assert overall_verdict([], True) == "UNMEASURED"
    assert overall_verdict([ok, ok], True) == "PASS"


@pytest.mark.parametrize(
    "version,match",
    [
        (SCHEMA_VERSION + 1, "newer than this harness reads .*upgrade harness"),
        ("one", "schema_version 'one' is unknown"),
        (None, "schema_version None is unknown"),
        (0, "schema_version 0 is unknown"),
    ],
)
def test_newer_or_unknown_schema_is_a_clear_error(synth, tmp_path, version, match):
    import shutil

    d = tmp_path / "r"
    shutil.copytree(synth, d)
    s = json.loads((d / "summary.json").read_text())
    s["schema_version"] = version
    (d / "summary.json").write_text(json.dumps(s))
    with pytest.raises(UsageError, match=match) as e:
        load_run(d)
    assert "summary.json" in str(e.value) and "\n" not in str(e.value)


def test_reader_errors_name_the_file_and_the_fix(synth, tmp_path):
    import shutil

    with pytest.raises(UsageError, match="no such run directory"):
        load_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        UsageError, match=r"summary.json not found; give a run directory written by `harness run`"
    ):
        load_run(empty)
    d = tmp_path / "r"
    shutil.copytree(synth, d)
    (d / "summary.json").write_text('{"schema_version": 1, ')
    with pytest.raises(UsageError, match="summary.json is not valid JSON"):
        load_run(d)
    shutil.rmtree(d)
    shutil.copytree(synth, d)
    (d / "steps.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="steps.parquet: unreadable parquet"):
        load_run(d)
    pq.write_table(pa.table({"rank": [0]}), d / "steps.parquet")
    with pytest.raises(UsageError, match="steps.parquet: lacks column"):
        load_run(d)
    (d / "spec.yaml").unlink()
    with pytest.raises(UsageError, match="spec.yaml: missing"):
        load_run(d)


def test_environment_without_cuda_or_git(monkeypatch):
    import harness.results.environment as results

    fake = types.SimpleNamespace(
        __version__="9.9",
        version=types.SimpleNamespace(cuda=None),
        cuda=types.SimpleNamespace(is_available=lambda: False),
    )
    monkeypatch.setattr(results.shutil, "which", lambda name: None)
    env = environment(
        hostnames=["b", "a", "b"], slurm_job_id="42", backend="gloo", torch_module=fake
    )
    assert (
        env["git_sha"] is None
        and env["torch"] == "9.9"
        and env["gpu_count"] == 0
        and env["gpu_names"] == []
    )
    assert env["hostnames"] == ["a", "b"] and env["slurm_job_id"] == "42" and env["harness_version"]
    assert env["nccl"] is None and env["driver"] is None


def test_environment_with_gpus_and_git(monkeypatch):
    import harness.results.environment as results

    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 2,
        get_device_name=lambda i: f"NVIDIA H100 80GB HBM3 #{i}",
        nccl=types.SimpleNamespace(version=lambda: (2, 21, 5)),
    )
    fake = types.SimpleNamespace(
        __version__="2.11", version=types.SimpleNamespace(cuda="12.8"), cuda=cuda
    )
    monkeypatch.setattr(results, "_driver_version", lambda: "570.86")
    env = environment(torch_module=fake)
    assert env["gpu_count"] == 2 and env["gpu_names"][1].endswith("#1")
    assert (env["cuda"], env["nccl"], env["driver"]) == ("12.8", "2.21.5", "570.86")
    assert env["git_sha"] is None or len(env["git_sha"].split("-")[0]) == 40  # this checkout's HEAD
