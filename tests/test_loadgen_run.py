"""``harness run --loadgen server|offline``: MLPerf LoadGen (6.0.17, the ``loadgen`` extra that
``./setup.sh --test`` installs) issues the queries of both engines and judges the run.

* the reference engine's arrival seam (``engines/reference/arrivals.py``) under real LoadGen, driven
  by a plain loop on this thread (no world): Server and Offline;
* a Server run of the CPU demo (reference engine, one 8-rank world, 16 requests) and Server and
  Offline runs against the session's shared vLLM CPU server: LoadGen's logs in the run directory,
  its verdict in summary.json and read back from its log, our TTFT/TPOT percentiles within 1 % or
  1 ms of LoadGen's own from the same requests;
* bad input: one line, exit 2, before any rank or server starts, nothing written.
"""

from __future__ import annotations

import subprocess
import sys
import time
from argparse import Namespace

import mlperf_loadgen  # noqa: F401 (the test extra installs it: never skipped)
import pytest

from demo_run import DEMO_CONFIG, REPO, assert_verdict_exit, harness_run
from harness.commands.run_options import run_options
from harness.engines.loadgen.bridge import LoadGenTest
from harness.engines.loadgen.judged import loadgen_block
from harness.engines.loadgen.launch import loadgen_options, preflight
from harness.engines.loadgen.settings import make_options
from harness.engines.options import LaunchOptions
from harness.engines.reference.arrivals import LoadGenScheduler
from harness.errors import UsageError
from harness.results.imports import loadgen as reader
from harness.spec.spec import load_spec
from harness.spec.workload import build_trace
from vllm_server import needs_vllm, spec_dict, write_spec

LOGS = {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_trace.json"}


def _spec(*sets: str):
    return load_spec(DEMO_CONFIG, list(sets))


def _launch(mode: str | None, rules: bool = False) -> LaunchOptions:
    return LaunchOptions(config=DEMO_CONFIG, loadgen=mode, mlperf_rules=rules)


# ---------------------------------------------------------------- options and bad input


def test_options_from_the_demo_spec():
    opts = loadgen_options(_spec("workload.num_requests=12"), _launch("server"))
    assert (opts.scenario, opts.target_qps, opts.queries) == ("server", 4.0, 12)
    assert (opts.ttft_ms, opts.tpot_ms, opts.percentile) == (2000.0, 500.0, 0.90)
    assert opts.min_duration_ms == 0 and "NOT enforced" in opts.rules_note()
    ruled = loadgen_options(_spec("run.timeout_s=900"), _launch("offline", rules=True))
    assert ruled.scenario == "offline" and ruled.min_duration_ms == 600_000
    assert loadgen_options(_spec(), _launch(None)) is None


@pytest.mark.parametrize(
    "sets, mode, match",
    [
        (("workload.max_concurrency=2",), "server", "drop workload.max_concurrency"),
        (("workload.arrival=closed", "workload.concurrency=2"), "server", "arrival is closed"),
        (("parallel.tp=1", "parallel.pp=4", "parallel.dp=2"), "server", "parallel.dp: 1"),
        (("slo.targets=[p99_ttft_ms <= 2000, p90_tpot_ms <= 100]",), "offline", "one percentile"),
    ],
)
def test_bad_specs_are_one_line(sets, mode, match):
    with pytest.raises(UsageError, match=match) as e:
        preflight(_spec(*sets), _launch(mode))
    assert "\n" not in str(e.value)


def test_mlperf_rules_refuse_a_timeout_inside_the_600_s_minimum():
    """The demo's run.timeout_s (120 s) would stop a 600-s LoadGen test: refused before launch,
    one line naming the field and the fix; 600 s exactly is still too short, 601 s passes."""
    for t in (None, "600"):
        sets = () if t is None else (f"run.timeout_s={t}",)
        with pytest.raises(UsageError, match=r"run.timeout_s is (120|600) s") as e:
            preflight(_spec(*sets), _launch("server", rules=True))
        assert "\n" not in str(e.value) and "--set run.timeout_s=900" in str(e.value)
    opts = loadgen_options(_spec("run.timeout_s=601"), _launch("server", rules=True))
    assert opts.min_duration_ms == 600_000
    assert loadgen_options(_spec(), _launch("server")).min_duration_ms == 0  # no rules: no floor


def test_mlperf_rules_offline_takes_the_spec_rate_as_loadgens_expected_rate():
    opts = loadgen_options(_spec("run.timeout_s=900"), _launch("offline", rules=True))
    assert opts.target_qps == 4.0  # the demo's workload.rate_rps, not the trace's request count
    assert loadgen_options(_spec(), _launch("offline")).target_qps == 48.0  # no rules: the count
    closed = _spec("run.timeout_s=900", "workload.arrival=closed", "workload.concurrency=2")
    with pytest.raises(UsageError, match="set workload.rate_rps") as e:
        preflight(closed, _launch("offline", rules=True))
    assert "\n" not in str(e.value)


def _args(**kw) -> Namespace:
    from harness.cli import build_parser

    argv = ["run", str(DEMO_CONFIG)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mlperf_rules": True}, "--mlperf-rules: goes with --loadgen"),
        ({"loadgen": "offline", "request_rate": 3}, "drop it, or use --loadgen server"),
        ({"loadgen": "server", "find_capacity": True}, "not with --find-capacity"),
        ({"loadgen": "server", "until_decided": True}, "not with --until-decided"),
        ({"loadgen": "server", "repeats": 2}, "not with --repeats"),
    ],
)
def test_bad_flags_are_one_line(kw, match):
    with pytest.raises(UsageError, match=match):
        run_options(_args(**kw))


def test_offline_request_rate_is_the_expected_rate_under_mlperf_rules():
    opts = run_options(_args(loadgen="offline", request_rate=3, mlperf_rules=True))
    assert opts.launch.loadgen == "offline" and opts.launch.mlperf_rules is True


def test_cli_refuses_before_any_rank_starts(tmp_path):
    """LoadGen not importable (a module of that name that fails, first on the path): exit 2, one
    line, no run directory."""
    (tmp_path / "mlperf_loadgen.py").write_text("raise ImportError('not here')\n")
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "harness.cli", "run", str(DEMO_CONFIG), "--loadgen", "server"]
    p = subprocess.run(
        cmd + ["--results-dir", str(run_dir)], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert p.returncode == 2 and not run_dir.exists()
    assert p.stderr.strip().splitlines() == [
        "harness run: error: --loadgen: mlperf_loadgen is not installed; pip install "
        "'harness[loadgen]' (mlcommons-loadgen==6.0.17)"
    ]


# ---------------------------------------------------------------- the arrival seam, no world


def _drive(sched: LoadGenScheduler, step_s: float = 0.004) -> None:
    """What the coordinator's loop does with a scheduler: release, schedule, complete (each step
    ``step_s``, every sampled token 7)."""
    t0 = time.monotonic()
    deadline = t0 + 60
    while not sched.done():
        assert time.monotonic() < deadline, "LoadGen never finished"
        now = time.monotonic() - t0
        sched.release(now)
        batch = sched.schedule(now, 1)
        if batch is None:
            time.sleep(0.001)
            continue
        time.sleep(step_s)
        sched.complete(batch, [7] * len(batch.rows), time.monotonic() - t0)


def _seam(tmp_path, mode: str, n: int, rules: bool = False):
    spec = _spec(f"workload.num_requests={n}", "workload.rate_rps=20", "run.timeout_s=900")
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    opts = loadgen_options(spec, _launch(mode, rules=rules))
    sched = LoadGenScheduler(
        LoadGenTest(opts, len(trace.requests), tmp_path),
        trace,
        num_slots=8,
        max_batch=4,
        max_seq_len=128,
    )
    _drive(sched)
    return opts, trace, sched


def test_server_arrivals_come_from_loadgen_and_agree_with_its_log(tmp_path):
    opts, trace, sched = _seam(tmp_path, "server", 16)
    assert LOGS <= {p.name for p in tmp_path.iterdir()}
    recs = sched.records
    assert sorted(r.request_id for r in recs) == list(range(16)) and all(r.completed for r in recs)
    # every trace request issued once, with its own lengths and prompt
    assert sorted(r.input_len for r in recs) == sorted(q.input_len for q in trace.requests)
    # LoadGen's Poisson schedule, not the trace's: the arrivals are LoadGen's scheduled times
    theirs = {r.request_id: r for r in reader.read(tmp_path).records}
    for r in recs:
        assert abs(r.arrival_s - recs[0].arrival_s - theirs[r.request_id].arrival_s) < 1e-3
    block = loadgen_block(opts, tmp_path, recs, sched.test.issued)
    assert block["validity"] in ("VALID", "INVALID") and block["issued"] == 16
    assert [r["metric"] for r in block["agreement"]] == [
        "p50_ttft_ms",
        "p90_ttft_ms",
        "p99_ttft_ms",
        "p50_tpot_ms",
        "p90_tpot_ms",
        "p99_tpot_ms",
    ]
    assert block["agreement_ok"], block["agreement"]


def test_offline_issues_everything_at_once(tmp_path):
    opts, _, sched = _seam(tmp_path, "offline", 8)
    assert max(r.arrival_s for r in sched.records) - min(r.arrival_s for r in sched.records) < 5e-3
    block = loadgen_block(opts, tmp_path, sched.records, sched.test.issued)
    assert block["settings"]["scenario"] == "Offline" and block["validity"] == "VALID"
    assert [r["metric"] for r in block["agreement"]] == [
        "p50_e2el_ms",
        "p90_e2el_ms",
        "p99_e2el_ms",
    ]
    assert block["agreement_ok"], block["agreement"]


def test_mlperf_rules_keep_issuing_until_the_minimum_duration(tmp_path, monkeypatch):
    """Under MLPerf's rules LoadGen draws the trace's requests again until its minimum duration
    is over (shortened here from 600 s to 3 s); with each request issued only once it stopped at
    the trace's 8 and called the run INVALID (found on the first end-to-end run)."""
    from harness.engines.loadgen import settings

    monkeypatch.setattr(settings, "MLPERF_MIN_DURATION_MS", 3000)
    opts, trace, sched = _seam(tmp_path, "server", 8, rules=True)
    assert opts.min_duration_ms == 3000
    recs = sched.records
    assert sched.test.issued == len(recs) > 3 * 8  # about 20/s for 3 s: the 8 drawn again
    assert sorted(r.request_id for r in recs) == list(range(len(recs)))
    assert {r.input_len for r in recs} <= {q.input_len for q in trace.requests}
    assert max(r.arrival_s for r in recs) - min(r.arrival_s for r in recs) > 2.5
    summary = (tmp_path / "mlperf_log_summary.txt").read_text()
    assert "Min duration satisfied : Yes" in summary
    block = loadgen_block(opts, tmp_path, recs, sched.test.issued)
    assert block["mlperf_rules"] is True and "minimum duration" not in block["failed"]


def test_a_stopped_test_still_ends_and_writes_its_logs(tmp_path):
    spec = _spec("workload.num_requests=6")
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    opts = make_options("server", 50.0, 6, [])
    test = LoadGenTest(opts, 6, tmp_path)
    test.start(lambda *a: None)  # nobody serves the queries
    time.sleep(0.3)
    test.abort()
    assert test.finished and (tmp_path / "mlperf_log_detail.txt").exists()
    assert len(trace.requests) == 6


# ---------------------------------------------------------------- real runs


def _check_run(run_dir, res, scenario: str, n: int) -> dict:
    s = assert_verdict_exit(res.returncode, run_dir, res.stderr)
    assert LOGS <= {p.name for p in run_dir.iterdir()}
    lg = s["loadgen"]
    back = reader.read(run_dir).header
    assert lg["validity"] == back["loadgen"]["result_validity"] and lg["issued"] == n
    assert lg["settings"]["scenario"] == back["scenario"] == scenario
    assert lg["failed"] == back["loadgen_verdict"]["failed"]
    assert lg["agreement_ok"], lg["agreement"]
    assert lg["mlperf_rules"] is False and "NOT enforced" in lg["rules"]
    assert f"harness run: LoadGen {scenario}: {lg['validity']}" in res.stderr
    assert "600 s minimum duration NOT enforced" in res.stderr
    assert s["metrics"]["completed"] == n
    return s


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_reference_engine_server_run(tmp_path):
    run_dir = tmp_path / "run"
    res = harness_run(
        run_dir, "workload.num_requests=16", flags=("--loadgen", "server"), timeout=300, report=True
    )
    s = _check_run(run_dir, res, "Server", 16)
    for table in ("requests", "steps", "comm", "stages"):  # every other table stays
        assert (run_dir / f"{table}.parquet").exists(), table
    md = (run_dir / "report.md").read_text()
    assert f"LoadGen Server verdict: {s['loadgen']['validity']}" in md
    assert "| p99_ttft_ms |" in md


@needs_vllm
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode, scenario", [("server", "Server"), ("offline", "Offline")])
def test_vllm_server_runs(mode, scenario, vllm_ckpt, vllm_server, tmp_path):
    """The session's shared vLLM CPU server (tests/conftest.py), driven by LoadGen."""
    engine = {"kind": "openai", "url": vllm_server["url"], "model": vllm_server["model"]}
    config = write_spec(tmp_path / "lg.yaml", spec_dict(vllm_ckpt, engine, num_requests=12))
    run_dir = tmp_path / "run"
    res = harness_run(run_dir, config=config, flags=("--loadgen", mode), timeout=400)
    s = _check_run(run_dir, res, scenario, 12)
    assert (run_dir / "server_metrics.parquet").exists()  # the driver's scrapes stay
    assert s["loadgen"]["settings"]["ttft_limit_ms"] == 5000.0
